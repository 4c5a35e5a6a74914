// Apart from the stats service so that the CLI can check --minutes without loading it.

/** The longest window `GET /v1/stats` summarizes, in minutes. */
export const MAX_STATS_MINUTES = 60;
