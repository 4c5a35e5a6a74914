import type { RealtimeClient, Subscription, TopicMessage } from '@orchestra/sdk';
import { useEffect, useRef } from 'react';

type Listener = { message: (m: TopicMessage) => void; lost: () => void };
type Entry = { listeners: Set<Listener>; subscription: Promise<Subscription | undefined> };

/**
 * One realtime subscription per topic for the whole console, shared by every view that
 * shows it (the SDK allows one per topic and connection). The last view to leave
 * unsubscribes.
 */
export class TopicHub {
  readonly #realtime: RealtimeClient;
  readonly #topics = new Map<string, Entry>();

  constructor(realtime: RealtimeClient) {
    this.#realtime = realtime;
  }

  listen(topic: string, listener: Listener): () => void {
    let entry = this.#topics.get(topic);
    if (entry === undefined) {
      const listeners = new Set<Listener>();
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
      const created: Entry = { listeners, subscription };
      // Messages published between a view's first read and the subscription taking hold
      // never arrive: once it holds, the views read again.
      void subscription.then((s) => {
        if (s !== undefined) for (const l of listeners) l.lost();
      });
      entry = created;
      this.#topics.set(topic, entry);
    }
    entry.listeners.add(listener);
    const current = entry;
    return () => {
      current.listeners.delete(listener);
      if (current.listeners.size > 0) return;
      if (this.#topics.get(topic) === current) this.#topics.delete(topic);
      void current.subscription.then((s) => s?.unsubscribe()).catch(() => {});
    };
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
