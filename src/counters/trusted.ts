/**
 * Longest time an object trusts a record it read without reading it again. Changes that remove rights are told to
 * the objects before they are answered (or, failing that, soon after: keys/reload.ts); this bounds how long other
 * changes (such as the account's default limit) take.
 */
export const RECORD_TTL_MS = 60_000;
/** Longest time a record is trusted while a change to it may still land in D1 (see `distrust`). */
export const UNSETTLED_TRUST_MS = 1_000;

/** Where an object keeps the bookmark of the last change that reloaded it: its reads come from a copy caught up with it. */
export const BOOKMARK_KEY = "bookmark";

/** The most records one object keeps. */
const MAX_RECORDS = 10_000;

/**
 * What an object read from D1 and trusts without reading again: each record for `ttlMs`, or for `unsettledMs` once
 * read while a change to it may still land in D1 (`distrust`). `reload` forgets every record; a read under way when it
 * came is neither kept nor used: its requests read again. Concurrent requests for one record share one read.
 */
export class TrustedRecords<R> {
  private readonly records = new Map<string, { value: R; loadedAt: number }>();
  private readonly loading = new Map<string, Promise<R>>();
  private generation = 0;
  /** Until when a change may still land in D1: records read before then are trusted briefly. Kept in storage. */
  private distrustUntil: number;

  constructor(
    private readonly kv: SyncKvStorage,
    private readonly clock: () => number,
    private readonly ttlMs: number,
    private readonly unsettledMs: number,
    private readonly storageName: string,
  ) {
    this.distrustUntil = kv.get<number>(storageName) ?? 0;
  }

  /** The record `id`, read with `load` when none is trusted now. */
  get(id: string, load: () => Promise<R>): Promise<R> {
    const held = this.records.get(id);
    if (held && this.clock() - held.loadedAt < (held.loadedAt < this.distrustUntil ? this.unsettledMs : this.ttlMs))
      return Promise.resolve(held.value);
    const running = this.loading.get(id);
    if (running) return running;
    const generation = this.generation;
    const loadedAt = this.clock();
    const read: Promise<R> = load()
      .then((value) => {
        // A reload came during the read: what it read may be from before the change that reloaded, whose answer may
        // have left already. The requests that wait for it are judged by a read made since.
        if (generation !== this.generation) return this.get(id, load);
        this.records.delete(id);
        this.records.set(id, { value, loadedAt });
        // A person with many sessions: the ones read longest ago are read again if they come back.
        if (this.records.size > MAX_RECORDS) this.records.delete(this.records.keys().next().value as string);
        return value;
      })
      .finally(() => {
        if (generation === this.generation) this.loading.delete(id);
      });
    this.loading.set(id, read);
    return read;
  }

  /** The record `id` if one is trusted now, with no read. */
  peek(id: string): R | undefined {
    const held = this.records.get(id);
    return held && this.clock() - held.loadedAt < (held.loadedAt < this.distrustUntil ? this.unsettledMs : this.ttlMs)
      ? held.value
      : undefined;
  }

  /** Replaces a trusted record in memory (what the object itself just wrote of it). */
  update(id: string, change: (value: R) => R): void {
    const held = this.records.get(id);
    if (held) held.value = change(held.value);
  }

  /** Whether a change may still land in D1 (see `distrust`): reads then go to the primary. */
  unsettled(): boolean {
    return this.clock() < this.distrustUntil;
  }

  /** Forgets every record: the next request reads each again. */
  reload(): void {
    this.generation += 1;
    this.records.clear();
    this.loading.clear();
  }

  /**
   * A change was made but is not known to be in D1 yet (it may still land): forgets every record, and trusts one read
   * in the next `ms` for `unsettledMs` at most, so the change is in force soon after it lands.
   */
  distrust(ms: number): void {
    this.distrustUntil = Math.max(this.distrustUntil, this.clock() + ms);
    this.kv.put(this.storageName, this.distrustUntil);
    this.reload();
  }
}
