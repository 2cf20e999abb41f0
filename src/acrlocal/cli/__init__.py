"""The ``acrlocal`` command line, shaped like ``az``: a client of the server, like az, that never opens the
server's database or stores.

:mod:`.main` is the entry point; :mod:`.framework` gives click az's argument and error behaviour, :mod:`.output`
az's ``--output`` and ``--query``. A command gets a :class:`.session.Session` (where the server is:
:mod:`.endpoints`; who is signed in: :mod:`.profile`, :mod:`.credentials`) and talks over https (:mod:`.client`)
to ARM, Graph and the registries (:mod:`.acr_auth`, :mod:`.registries`, :mod:`.docker`). The command groups are in
:mod:`.commands`; :mod:`.credhelper` is ``docker-credential-acrlocal``. Errors are :mod:`.errors`, each with az's
exit code.
"""
