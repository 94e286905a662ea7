"""Peer-to-peer layer on libp2p: identity, authorisation, wire format, pipeline/adapter/gossip protocols."""
