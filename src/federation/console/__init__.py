"""The gateway's web console for the people the product serves: county and township
doctors, specialists, regional administrators and auditors (issue 9).

Server-rendered pages (Jinja2) with a little htmx and ECharts, vendored into
``static/vendor`` by ``scripts/vendor_static.py``. Every page is a client of the gateway's
own HTTP API as the signed-in person (:mod:`federation.console.web`), so roles, consent,
access policies and the exchange log apply exactly as they do to any other client.
"""
