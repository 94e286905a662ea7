"""bsns node: everything one participant runs.

Sub-packages follow the data flow of a job: ``chain`` (contracts, transactions, events) →
``daemon`` (the long-running process that reacts to the chain) → ``p2p`` (libp2p transport
between peers) → ``train`` (the shard trainer), with ``model`` (sharded transformers) and
``tuners`` (one module per PEFT method) underneath ``train``. ``chain``, ``p2p`` and ``train``
never import each other; only ``daemon`` ties them together.
"""
