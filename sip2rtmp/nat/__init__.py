"""Being reachable from outside a NAT: STUN (RFC 5389) and the choice of the addresses we
advertise in Contact and SDP."""
