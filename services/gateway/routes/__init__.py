"""The gateway's REST routes, one router per resource, each declaring the role it needs."""
