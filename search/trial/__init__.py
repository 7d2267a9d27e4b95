"""One trial: what a decoupling costs before it is built (``reach``, ``costs``), the one
feasibility rule (``constraints``), cut sets placed to meet it (``placement``), and the
objective that samples, trains briefly, reports and records (``objective``)."""
