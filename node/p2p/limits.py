"""The p2p layer's protocol ids and limits, one home for each: a leaf the host and every service import.

Grouped by who enforces them. Numbers that are there for a measured reason say so.
"""

# ---- protocol ids (what ``authorize(address, protocol)`` is asked with)
PIPELINE_PROTOCOL = "/bsns/pipeline/1"
ADAPTER_PROTOCOL = "/bsns/adapter/1"
KAD_PROTOCOL = "/ipfs/kad/1.0.0"
GOSSIP_PREFIX = "gossip:"      # a gossip message on topic T is authorised as GOSSIP_PREFIX + T

# ---- host: streams, authorisation, dialling
STREAM_CHUNK = 1 << 18         # write size on a libp2p stream (yamux cuts 64 KiB frames anyway)
MAX_IDLE_STREAMS = 4           # pooled streams per (peer, protocol)
IDLE_STREAM_TIMEOUT = 300.0    # a handler closes a stream idle this long between messages
AUTH_TTL = 2.0                 # seconds a positive authorisation answer is reused per (peer, protocol)
DISCONNECT_TIMEOUT = 5.0       # a disconnect that takes longer is given up on (the socket is closed anyway)

# ---- host: who may connect (node.p2p.gate)
REFUSAL_BUDGET = 32            # refused messages a peer may send in a burst before it is sent away ...
REFUSAL_REFILL = 0.5           # ... refilled at this many per second (an honest peer is refused ~never)
SEND_AWAY = 60.0               # seconds a peer past its budget is disconnected and refused connections/streams
MAX_CONNS_PER_IP = 64          # established inbound libp2p connections per IP (identities are free)

# ---- bulk channel (side sockets keyed over libp2p)
BULK_THRESHOLD = 1 << 20       # payloads (single transfers) of at least this many bytes leave the stream
NO_BULK = 1 << 62              # the threshold of a node with the bulk channel off

# ---- pipeline service: links (keyed side sockets carrying many messages)
LINK_IDLE_DIALLER = 60.0       # a dialled link idle this long is closed, not reused ...
LINK_IDLE_LISTENER = 300.0     # ... well before the listening side gives up on it
LINK_RETRY_AFTER = 60.0        # after a peer declined a link, use the stream path this long
MAX_IDLE_LINKS = 4             # idle dialled links kept per peer
MAX_LINKS_PER_PEER = 8         # links (and their threads) one peer may hold open at this node
MAX_HEADER_RECORD = 128 * 1024  # a frame header record on a link (dims + a 64 KiB manifest fit)

# ---- pipeline service: who may send what (node.p2p.admission, node.p2p.inbox)
STEP_WINDOW = 2                # steps ahead of the one being trained a message may be for (the pipeline
                               # runs at most one step ahead; one more for a round boundary)
MAX_BUFFERED = 256             # messages held (arrived or arriving, not yet taken) by the whole inbox
MAX_PER_SESSION = 128          # ... for one session: a session that never runs cannot fill the buffer
MAX_PER_SENDER = 64            # ... from one peer: one member cannot take a session's whole share
RETRY_BACKOFF = (0.02, 0.5)    # a sender told "not now" asks again after this much, doubling to the cap
PRESENCE_POLL = 0.25           # a pipeline receive looks this often whether its sender's connection closed
SEND_PATIENCE = 60.0           # a pipeline step's send waits this long at least for a receiver that has not
                               # declared the session yet (still setting up): the trainer's receive timeout

# ---- blob service and store
BLOB_MEMORY = 512 << 20        # bytes of blobs kept in memory (pinned ones aside); older ones are read
                               # back from the owner's durable store when asked for
BLOB_WORKERS = 4               # threads serving open-protocol bulk transfers (never authorisation's)
AUTH_WORKERS = 8               # threads asking ``authorize`` (may query the chain)
PIPELINE_WORKERS = 16          # threads receiving pipeline bulk transfers
BLOB_RATE = (32.0, 64)         # open protocol, per peer: MiB per second (a request costs 1 + its MiB), burst
BULK_TAKE_TIMEOUT = 10.0       # a requester offered a bulk transfer must dial in this soon (honest: ms)
BLOB_CONCURRENT = 2            # blob requests one peer may have in progress at once
BLOB_QUEUE_WAIT = 5.0          # a request that finds the blob pool busy this long is told "busy"
REFUSAL_DELAY = 1.0            # a request over its peer's rate is answered this much later (a tarpit)

# ---- gossip service
MAX_GOSSIP_BYTES = 64 * 1024   # far under GossipSub's silent 1 MiB drop
GOSSIP_RATE = 8                # messages per second per topic, under the library's 10/s limit
