"""VerTac contracts: every bus message, REST body and subject name lives in this package."""
