"""The web dashboard: a front end, like :mod:`miyabi.cli`, that serves one home's
ensemble to browsers, scripts and Prometheus.

A FastAPI application (:mod:`miyabi.web.app`) behind a token check
(:mod:`miyabi.web.auth`): the REST API ``/api/v1`` with its pydantic schema and live
feeds as Server-Sent Events (:mod:`~miyabi.web.api`, :mod:`~miyabi.web.logs`,
:mod:`~miyabi.web.kpis`, :mod:`~miyabi.web.models`), the pages, rendered on the
server and kept live by one hand-written script (:mod:`~miyabi.web.pages`,
``templates/``, ``static/``), ``/metrics`` (:mod:`~miyabi.web.metrics`), live pane
screens (:mod:`~miyabi.web.screens`), and the server that binds, prints the URLs and
runs uvicorn (:mod:`~miyabi.web.server`). ``miyabi web`` runs it; so does the
controller, for a layout with a ``web:`` section.
"""
