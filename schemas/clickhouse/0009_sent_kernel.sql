-- lem:min-server 18.16
-- Where a request's send time comes from: 1, the kernel's transmit time of
-- its last byte (SO_TIMESTAMPING); 0, the client's clock when it handed
-- the request to its HTTP transport (issue 14). Older rows read 0.

ALTER TABLE {db}.requests
    ADD COLUMN sent_kernel UInt8 DEFAULT 0;
