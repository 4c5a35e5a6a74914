/**
 * Every table in the relational store. Each module's `tables.ts` adds its own by declaration
 * merging (`declare module '../store/database.ts'`), so this file lists no module: a new
 * module's tables need no change here.
 */
// biome-ignore lint/suspicious/noEmptyInterface: filled by declaration merging
export interface Database {}
