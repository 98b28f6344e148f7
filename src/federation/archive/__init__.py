"""The shared regional health archive: each site's resources, pulled from its change feed.

    store   :class:`ArchiveStore` — the replica (``site_resource``) and feed cursors
    sync    :class:`FeedPuller` — full history once, then increments, per site
"""
