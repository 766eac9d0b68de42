-- Each sync looks for acks a crash left unsent: keep that lookup small.
CREATE INDEX received_packets_unacked ON relaysync.received_packets (packet_id) WHERE NOT acked;
