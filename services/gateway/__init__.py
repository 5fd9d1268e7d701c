"""Gateway: REST and WebSocket in front of the bus; holds no business logic."""
