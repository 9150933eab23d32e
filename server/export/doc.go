// Package export moves findings out of Vigil into other tools: encoders for
// JSON lines and OCSF Detection Finding (class 2004), used by the API's
// export endpoint, and forwarders that follow the findings table and deliver
// every new finding to a SIEM over syslog (RFC 5424 over UDP, TCP or TLS) or
// to a webhook.
//
// Delivery is at-least-once from a durable cursor: each forwarder keeps the
// id of the last finding it delivered in the store (forwarder_cursors), reads
// the findings after it in id order, delivers a batch, and only then moves
// the cursor. An orderly stop (Runner.Stop, the server's SIGTERM) lets the
// batch in flight finish and stores its cursor (bounded by DrainTimeout), so
// an orderly restart, or a restart of the receiver, delivers each finding
// exactly once (test/e2e TestSyslogRsyslog, against a real rsyslogd). After
// a crash the forwarder resumes from the stored cursor, so the one batch in
// flight is sent again: a receiver may then see up to one batch of
// duplicates, never a gap. Every message carries the finding's stable uid
// (agent_id:seq) to deduplicate on. What "delivered" means depends on the
// transport:
//
//   - webhook: the receiver answered 2xx.
//   - syslog over TCP/TLS: each batch goes over its own connection, framed
//     with octet counting (RFC 6587 / RFC 5425). After the batch the
//     forwarder closes its sending side and waits for the receiver to close
//     its side: a receiver closes after it has read everything up to our
//     end of stream, so a clean close confirms that the whole batch was
//     read. A reset, a timeout or any error (over TLS, an alert such as the
//     refusal of our client certificate) means the batch is sent again.
//   - syslog over UDP: there is no acknowledgement; a datagram that the
//     network loses is lost. The cursor moves once the datagrams are sent.
//     Use TCP or TLS where loss matters.
//
// Configuration is the `forwarders:` list of the server's YAML config file
// (LoadConfig, ParseConfig); Start runs every configured forwarder until its
// context ends.
package export
