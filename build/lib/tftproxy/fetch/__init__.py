"""Fetching: downloads from upstreams (:mod:`.http`, written and hashed by :mod:`.writer`),
which URLs are fetched at all (:mod:`.schemes`), and checks against the distribution's
checksum manifests (:mod:`.verify`). Nothing here knows of names, links or the store.
"""
