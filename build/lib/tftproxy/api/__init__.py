"""The HTTP API: smart-proxy's routes, served by aiohttp.

:mod:`.app` holds the one route table; :mod:`.context` what handlers work with;
:mod:`.responses` the one status table and plain-text errors; :mod:`.auth` who may call;
:mod:`.listeners` the sockets; :mod:`.params` reading parameters as Sinatra does; one module
per group of routes (:mod:`.bootfiles`, :mod:`.pxe`, :mod:`.proxy`, :mod:`.httpboot`,
:mod:`.openapi`).
"""
