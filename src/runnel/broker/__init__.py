"""Event logs of streams: the ``Broker`` interface and its implementations.

``memory`` (the embedded default) keeps each log in this process; ``redis`` keeps them in
Redis Streams so that any process can serve any stream.
"""

from runnel.broker.base import Batch, Broker, Push, StreamMeta

__all__ = ["Batch", "Broker", "Push", "StreamMeta"]
