"""objfs: mount NATS JetStream Object Store buckets as a filesystem."""

__version__ = "0.1.0"
