"""Jobs: what a fetch request means for the store.

:mod:`.bootfiles` takes requests and runs jobs; :mod:`.registry` joins callers to the running
job of a name; :mod:`.transaction` switches a boot set as one generation, from
:mod:`.check`'s per-member outcomes (Unchanged | Changed | Failed) under :mod:`.locking`'s
locks; :mod:`.revalidate` runs that transaction over a whole set (keep mode), which
:mod:`.sync` dispatches in the background and on demand, on :mod:`.schedule`'s rules, over
:mod:`.catalogue`'s known sets; :mod:`.status` reports what is published; :mod:`.options`
and :mod:`.results` are the plain types at the package's edges. Nothing is imported here, so
that importing the options (as the settings model does) does not import the HTTP client.
"""
