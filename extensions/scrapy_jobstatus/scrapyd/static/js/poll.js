/* One loop of requests to the node, as the job list, the event stream and
 * the nodes panel each run one: a run now, the next one a while after it
 * ends, none while the tab is hidden. */

export class Poll {
  #run;
  #every;
  #gap;
  #hidden;
  #timer = null;
  #turn = null; // the AbortController of the latest run: aborted once it is dropped
  #busy = false; // that run is under way
  #again = false; // another run was asked for meanwhile
  #startedAt = 0;

  /* run(signal) does one run and may return the delay before the next
   * (every, otherwise); signal is aborted once the run is dropped (stopped,
   * or another one started), when what it read must not be shown. soon()
   * starts runs no closer than gap. */
  constructor(run, { every, gap = 0, hidden = () => document.hidden }) {
    this.#run = run;
    this.#every = every;
    this.#gap = gap;
    this.#hidden = hidden;
  }

  /* A run now, the one under way dropped; none while the tab is hidden. */
  async now() {
    this.#clear();
    if (this.#hidden()) return;
    if (this.#turn) this.#turn.abort();
    const turn = new AbortController();
    this.#turn = turn;
    this.#busy = true;
    this.#again = false;
    this.#startedAt = Date.now();
    let delay = this.#every;
    try {
      const wanted = await this.#run(turn.signal);
      if (typeof wanted === "number") delay = wanted;
    } finally {
      if (this.#turn === turn) this.#busy = false;
      if (!turn.signal.aborted && !this.#hidden() && this.#timer === null) {
        // Asked for while this run was under way: the next one at once, gap allowing.
        if (this.#again) delay = Math.min(delay, this.#untilGap());
        this.#again = false;
        this.#timer = setTimeout(() => this.now(), delay);
      }
    }
  }

  /* A run as soon as may be: one under way is let finish, then followed by
   * another; never more than one each gap. */
  soon() {
    if (this.#hidden()) return;
    if (this.#busy) {
      this.#again = true;
      return;
    }
    this.#clear();
    this.#timer = setTimeout(() => this.now(), this.#untilGap());
  }

  /* No more runs until now(): a run under way is dropped. */
  stop() {
    this.#clear();
    if (this.#turn) this.#turn.abort();
    this.#busy = false;
  }

  #clear() {
    clearTimeout(this.#timer);
    this.#timer = null;
  }

  #untilGap() {
    return Math.max(0, this.#startedAt + this.#gap - Date.now());
  }
}
