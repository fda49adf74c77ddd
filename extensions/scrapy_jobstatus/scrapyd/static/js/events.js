/* The node's event stream. events.json is a long poll, answered as soon as
 * a job's history moves: it starts, gets its first response, stalls, is
 * cancelled, ends. Each answer with events is handed on at once, so the
 * page refreshes then instead of at its next poll, which stays as the
 * heartbeat: counters move between events without making any, and a job
 * just queued makes none either. Without the service (404: an older
 * scrapyd.conf), the page polls as before, silently, and asks again now and
 * then; paused with the rest while the tab is hidden. Behind the oldest
 * event the node keeps (410: older ones were pruned), the stream missed
 * some: the page reloads what it shows, and the stream starts again from
 * the latest event. */

import { NodeError, readEvents } from "./api.js";
import { Poll } from "./poll.js";

// Asked to wait this long for the next event.
const EVENTS_WAIT_S = 25;
// However many events come, at most one long poll (and one refresh) this often.
export const EVENTS_GAP_MS = 250;
const EVENTS_RETRY_MS = 5000;
// A scrapyd.conf without events.json: asked again now and then (a restart may add it).
const SERVICE_MISSING_POLL_MS = 60000;

export class EventStream {
  #since = null; // the id of the last event seen

  /* onEvents(events) for each answer with events; onState(on) once the
   * node is known to serve the stream, or not; onMissed() when events were
   * missed (pruned before they were read). */
  constructor({ onEvents, onState, onMissed = () => {} }) {
    this.onEvents = onEvents;
    this.onState = onState;
    this.onMissed = onMissed;
    this.poll = new Poll((signal) => this.#watch(signal), { every: EVENTS_GAP_MS });
  }

  start() {
    this.poll.now();
  }

  /* The long poll under way is aborted; shown again, the page reads
   * everything afresh: the stream starts from the latest event. */
  stop() {
    this.poll.stop();
    this.#since = null;
  }

  async #watch(signal) {
    try {
      const answer = await readEvents(this.#since, EVENTS_WAIT_S, signal);
      if (signal.aborted) return undefined;
      const data = answer.data || {};
      if (answer.ok && Array.isArray(data.events) && Number.isInteger(data.last_id)) {
        const first = this.#since === null;
        this.#since = data.last_id;
        this.onState(true);
        if (!first && data.events.length) this.onEvents(data.events);
        return EVENTS_GAP_MS;
      }
      if (answer.code === 404) {
        this.#since = null;
        this.onState(false);
        return SERVICE_MISSING_POLL_MS;
      }
      if (answer.code === 410) {
        // Pruned past since: start again from the latest, once, and reload.
        this.#since = null;
        this.onMissed();
        return EVENTS_GAP_MS;
      }
      // A refusal or an error (a since the store no longer knows): start again from the latest.
      if (answer.code === 400) this.#since = null;
      return EVENTS_RETRY_MS;
    } catch (error) {
      if (!(error instanceof NodeError)) throw error;
      // Out of reach: the job list's poll says so; the stream is asked again later.
      return EVENTS_RETRY_MS;
    }
  }
}
