import type { RealtimeClient, Subscription, TopicMessage } from '@orchestra/sdk';
import { useEffect, useRef } from 'react';

type Listener = { message: (m: TopicMessage) => void; lost: () => void };
type Entry = {
  listeners: Set<Listener>;
  subscription: Promise<Subscription | undefined>;
  /** Set while no view listens: the subscription ends when it fires. */
  idle: ReturnType<typeof setTimeout> | undefined;
};

/** How long a subscription outlives its last view: moving between pages keeps it. */
const LINGER_MS = 10_000;
/** How long before a subscription that failed is tried again, while views listen. */
const RETRY_MS = 3_000;

/**
 * One realtime subscription per topic for the whole console, shared by every view that
 * shows it (the SDK allows one per topic and connection). It lingers a while after the last
 * view leaves, so that going from one page to another that shows the same topic does not
 * unsubscribe and subscribe again at the same moment (the two could cross); a subscription
 * that fails is tried again while views want it.
 */
export class TopicHub {
  readonly #realtime: RealtimeClient;
  readonly #topics = new Map<string, Entry>();

  constructor(realtime: RealtimeClient) {
    this.#realtime = realtime;
  }

  listen(topic: string, listener: Listener): () => void {
    const entry = this.#topics.get(topic) ?? this.#open(topic);
    clearTimeout(entry.idle);
    entry.idle = undefined;
    entry.listeners.add(listener);
    return () => {
      entry.listeners.delete(listener);
      // A failed subscription may have been opened again since: the listeners go along.
      const current = this.#topics.get(topic);
      if (current?.listeners !== entry.listeners || current.listeners.size > 0) return;
      current.idle = setTimeout(() => {
        if (current.listeners.size > 0 || this.#topics.get(topic) !== current) return;
        this.#topics.delete(topic);
        void current.subscription.then((s) => s?.unsubscribe()).catch(() => {});
      }, LINGER_MS);
    };
  }

  #open(topic: string, listeners = new Set<Listener>()): Entry {
    const subscription = this.#realtime
      .subscribe(topic, {
        onMessage: (m) => {
          for (const l of listeners) l.message(m);
        },
        onRecoveryFailed: () => {
          for (const l of listeners) l.lost();
        },
      })
      .catch(() => undefined); // live views are a convenience over what REST shows
    const entry: Entry = { listeners, subscription, idle: undefined };
    this.#topics.set(topic, entry);
    void subscription.then((s) => {
      if (s !== undefined) {
        // Messages published between a view's first read and the subscription taking
        // hold never arrive: once it holds, the views read again.
        for (const l of listeners) l.lost();
        return;
      }
      setTimeout(() => {
        if (this.#topics.get(topic) !== entry) return;
        if (listeners.size === 0) {
          this.#topics.delete(topic);
          return;
        }
        this.#open(topic, listeners);
      }, RETRY_MS);
    });
    return entry;
  }
}

/**
 * Calls `onMessage` for every live message of `topic` while mounted (none when undefined),
 * and `onLost` when the view may have missed messages: once the subscription takes hold
 * (after the view's first read), and when the stream could not be recovered.
 */
export function useTopic(
  hub: TopicHub,
  topic: string | undefined,
  onMessage: (message: TopicMessage) => void,
  onLost?: () => void,
): void {
  const handlers = useRef({ onMessage, onLost });
  handlers.current = { onMessage, onLost };
  useEffect(() => {
    if (topic === undefined) return;
    return hub.listen(topic, {
      message: (m) => handlers.current.onMessage(m),
      lost: () => handlers.current.onLost?.(),
    });
  }, [hub, topic]);
}
