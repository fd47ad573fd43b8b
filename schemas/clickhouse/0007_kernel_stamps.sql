-- lem:min-server 18.16
-- How many of a request's chunks carry the kernel's receive time of the
-- segment that brought them (SO_TIMESTAMPNS), the rest being stamped when
-- the client read them (issue 14). Older rows read 0: user-space stamps.

ALTER TABLE {db}.requests
    ADD COLUMN kernel_stamped UInt32 DEFAULT 0;
