/** The client went away while an answer was being sent to it (its connection closed). */
export class DestinationClosedError extends Error {
  readonly code = 'ERR_STREAM_PREMATURE_CLOSE';
  constructor() {
    super('the client went away');
  }
}
