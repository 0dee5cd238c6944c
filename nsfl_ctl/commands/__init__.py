"""The ``nsfl-ctl`` commands, one module per verb (``create``, ``get``, ...); ``main`` assembles them."""
