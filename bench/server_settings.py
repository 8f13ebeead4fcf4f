"""reasonflow.settings with the channel layer backend chosen by BENCH_CHANNEL_LAYER, for
`python -m bench --layer core|pubsub` (settings read no backend from the environment).

`core` is the production settings unchanged; `pubsub` swaps in channels-redis's
RedisPubSubChannelLayer on the same REDIS_URL and prefix.
"""

import os

from reasonflow.settings import *  # noqa: F403
from reasonflow.settings import REDIS_URL

if os.environ.get("BENCH_CHANNEL_LAYER") == "pubsub" and REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
