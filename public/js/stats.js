// Turns an RTCStatsReport into what a person wants to know about a connection: does media go
// directly or via a relay, how long a round trip takes, and how many bits per second flow.

/**
 * @param {RTCStatsReport} report
 * @param {{at: number, received: number, sent: number}|null} previous the last sample
 * @returns the summary and the sample to pass next time
 */
export function summarize(report, previous) {
  let pair = null;
  let received = 0;
  let sent = 0;
  let framesDecoded = 0;
  report.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) {
      pair = report.get(s.selectedCandidatePairId) || pair;
    } else if (s.type === 'inbound-rtp') {
      received += s.bytesReceived || 0;
      if (s.kind === 'video') framesDecoded += s.framesDecoded || 0;
    } else if (s.type === 'outbound-rtp') {
      sent += s.bytesSent || 0;
    }
  });
  if (!pair) {
    // Firefox does not name the pair on the transport; it marks it instead.
    report.forEach((s) => {
      if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded' && (s.selected ?? true)) {
        pair = pair || s;
      }
    });
  }
  const local = pair ? report.get(pair.localCandidateId) : null;
  const remote = pair ? report.get(pair.remoteCandidateId) : null;
  const at = performance.now();
  let inKbps = null;
  let outKbps = null;
  if (previous && at > previous.at) {
    const seconds = (at - previous.at) / 1000;
    inKbps = Math.max(0, ((received - previous.received) * 8) / 1000 / seconds);
    outKbps = Math.max(0, ((sent - previous.sent) * 8) / 1000 / seconds);
  }
  let path = 'unknown';
  if (local && remote) {
    path = local.candidateType === 'relay' || remote.candidateType === 'relay' ? 'relay' : 'direct';
  }
  return {
    summary: {
      path,
      localType: local ? local.candidateType : null,
      protocol: local ? local.relayProtocol || local.protocol : null,
      rttMs: pair && typeof pair.currentRoundTripTime === 'number' ? pair.currentRoundTripTime * 1000 : null,
      inKbps,
      outKbps,
      framesDecoded,
    },
    sample: { at, received, sent },
  };
}

export function formatBitrate(kbps) {
  if (kbps === null || kbps === undefined) return '–';
  if (kbps >= 1000) return `${(kbps / 1000).toFixed(1)} Mb/s`;
  return `${Math.round(kbps)} kb/s`;
}

export function describePath(summary) {
  const path = summary.path === 'relay' ? 'via relay' : summary.path === 'direct' ? 'direct' : 'connecting';
  const rtt = summary.rttMs === null ? '' : ` · ${Math.round(summary.rttMs)} ms`;
  const rate = summary.inKbps === null ? '' : ` · ${formatBitrate(summary.inKbps)}`;
  return `${path}${rtt}${rate}`;
}
