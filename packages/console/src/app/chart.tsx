import { type ReactNode, useId } from 'react';

// Small SVG charts for the overview: per-minute bars and lines. They scale with their box
// (viewBox), and every chart has a text description and a table with the same numbers, so
// that nothing is only visible as a picture.

const WIDTH = 600;
const HEIGHT = 180;
// Room on the right for the last minute's label, centred under its bar.
const PAD = { top: 10, right: 30, bottom: 24, left: 44 };

export interface Series {
  name: string;
  /** CSS class of the mark: colours live in the stylesheet. */
  className: string;
}

/** A round upper bound for an axis: 1, 2 or 5 times a power of ten. */
export function niceMax(value: number): number {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

/** `14:05` in the viewer's time zone. */
export function minuteLabel(iso: string): string {
  return new Date(iso).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
}

function Axes({
  max,
  labels,
  format,
}: {
  max: number;
  labels: string[];
  format: (value: number) => string;
}) {
  const plotHeight = HEIGHT - PAD.top - PAD.bottom;
  const plotWidth = WIDTH - PAD.left - PAD.right;
  const every = Math.max(1, Math.ceil(labels.length / 6));
  return (
    <g className="axes">
      {[0, 0.5, 1].map((f) => {
        const y = PAD.top + plotHeight * (1 - f);
        return (
          <g key={f}>
            <line x1={PAD.left} x2={WIDTH - PAD.right} y1={y} y2={y} className="grid" />
            <text x={PAD.left - 6} y={y + 4} textAnchor="end">
              {format(max * f)}
            </text>
          </g>
        );
      })}
      {labels.map((label, i) =>
        i % every === 0 || i === labels.length - 1 ? (
          <text
            // biome-ignore lint/suspicious/noArrayIndexKey: one label per minute, in order
            key={i}
            x={PAD.left + (plotWidth * (i + 0.5)) / labels.length}
            y={HEIGHT - 6}
            textAnchor="middle"
          >
            {label}
          </text>
        ) : null,
      )}
    </g>
  );
}

function Legend({ series }: { series: Series[] }) {
  return (
    <ul className="legend" aria-hidden="true">
      {series.map((s) => (
        <li key={s.name}>
          <span className={`swatch ${s.className}`} />
          {s.name}
        </li>
      ))}
    </ul>
  );
}

/** The chart's numbers as a table, folded away under the picture. */
function DataTable({
  caption,
  labels,
  labelHeader,
  series,
  values,
  format,
}: {
  caption: string;
  labels: string[];
  labelHeader: string;
  series: Series[];
  values: (number | null)[][];
  format: (value: number) => string;
}) {
  return (
    <details className="chart-data">
      <summary>Show as a table</summary>
      <div className="table-wrap">
        <table>
          <caption className="sr-only">{caption}</caption>
          <thead>
            <tr>
              <th scope="col">{labelHeader}</th>
              {series.map((s) => (
                <th scope="col" key={s.name}>
                  {s.name}
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {labels.map((label, i) => (
              // biome-ignore lint/suspicious/noArrayIndexKey: one row per minute, in order
              <tr key={i}>
                <th scope="row">{label}</th>
                {series.map((s, j) => {
                  const v = values[j]?.[i] ?? null;
                  return <td key={s.name}>{v === null ? '–' : format(v)}</td>;
                })}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </details>
  );
}

/** The chart's frame: caption, legend, the picture with its description, and the table. */
function Figure(props: {
  title: string;
  description: string;
  labels: string[];
  series: Series[];
  /** The table's columns: the series, then any columns it alone shows. */
  table: { series: Series[]; values: (number | null)[][] };
  /** Axes of the plot: `max` is the top of the value axis. */
  max: number;
  format: (value: number) => string;
  /** What a label is, for the table's first column. Default `Minute`. */
  labelHeader?: string | undefined;
  children: ReactNode;
}) {
  const id = useId();
  return (
    <figure className="chart">
      <figcaption>{props.title}</figcaption>
      <Legend series={props.series} />
      <svg viewBox={`0 0 ${WIDTH} ${HEIGHT}`} role="img" aria-labelledby={`${id}-title ${id}-desc`}>
        <title id={`${id}-title`}>{props.title}</title>
        <desc id={`${id}-desc`}>{props.description}</desc>
        <Axes max={props.max} labels={props.labels} format={props.format} />
        {props.children}
      </svg>
      <DataTable
        caption={props.title}
        labels={props.labels}
        labelHeader={props.labelHeader ?? 'Minute'}
        series={props.table.series}
        values={props.table.values}
        format={props.format}
      />
    </figure>
  );
}

/** Stacked bars per minute: `values[series][minute]`. */
export function StackedBars(props: {
  title: string;
  description: string;
  labels: string[];
  series: Series[];
  values: number[][];
  /** Columns for the table only, such as arrivals next to completions. */
  extraColumns?: { name: string; values: number[] }[];
  format?: (value: number) => string;
  /** What a label is (the table's first column). Default `Minute`. */
  labelHeader?: string;
}) {
  const format = props.format ?? ((v: number) => String(Math.round(v)));
  const { labels, series, values } = props;
  const extra = props.extraColumns ?? [];
  const totals = labels.map((_, i) => values.reduce((sum, s) => sum + (s[i] ?? 0), 0));
  // Counts: at least 2 at the top, so that the middle line is a whole number too.
  const max = Math.max(2, niceMax(Math.max(0, ...totals)));
  const plotHeight = HEIGHT - PAD.top - PAD.bottom;
  const slot = (WIDTH - PAD.left - PAD.right) / Math.max(1, labels.length);
  const barWidth = Math.max(1, slot * 0.7);
  return (
    <Figure
      title={props.title}
      description={props.description}
      labels={labels}
      series={series}
      table={{
        series: [...series, ...extra.map((c) => ({ name: c.name, className: '' }))],
        values: [...values, ...extra.map((c) => c.values)],
      }}
      max={max}
      format={format}
      labelHeader={props.labelHeader}
    >
      {labels.map((label, i) => {
        let base = PAD.top + plotHeight;
        return (
          // biome-ignore lint/suspicious/noArrayIndexKey: one bar per minute, in order
          <g key={i}>
            {series.map((s, j) => {
              const v = values[j]?.[i] ?? 0;
              if (v <= 0) return null;
              const h = (plotHeight * v) / max;
              base -= h;
              return (
                <rect
                  key={s.name}
                  className={s.className}
                  x={PAD.left + slot * i + (slot - barWidth) / 2}
                  y={base}
                  width={barWidth}
                  height={h}
                >
                  <title>{`${label}: ${format(v)} ${s.name}`}</title>
                </rect>
              );
            })}
          </g>
        );
      })}
    </Figure>
  );
}

/** Lines per minute, with gaps where a value is null: `values[series][minute]`. */
export function Lines(props: {
  title: string;
  description: string;
  labels: string[];
  series: Series[];
  values: (number | null)[][];
  format: (value: number) => string;
}) {
  const { labels, series, values, format } = props;
  const all = values.flat().filter((v): v is number => v !== null);
  const max = niceMax(Math.max(0, ...all));
  const plotHeight = HEIGHT - PAD.top - PAD.bottom;
  const slot = (WIDTH - PAD.left - PAD.right) / Math.max(1, labels.length);
  const x = (i: number) => PAD.left + slot * (i + 0.5);
  const y = (v: number) => PAD.top + plotHeight * (1 - v / max);
  return (
    <Figure
      title={props.title}
      description={props.description}
      labels={labels}
      series={series}
      table={{ series, values }}
      max={max}
      format={format}
    >
      {series.map((s, j) => {
        const points = values[j] ?? [];
        // One path per run of minutes with a value; a lone point still shows as a dot.
        let d = '';
        let open = false;
        points.forEach((v, i) => {
          if (v === null) {
            open = false;
            return;
          }
          d += `${open ? 'L' : 'M'}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
          open = true;
        });
        return (
          <g key={s.name} className={s.className}>
            <path d={d} className="line" />
            {points.map((v, i) =>
              v === null ? null : (
                // biome-ignore lint/suspicious/noArrayIndexKey: one point per minute, in order
                <circle key={i} cx={x(i)} cy={y(v)} r={2.5}>
                  <title>{`${labels[i]}: ${s.name} ${format(v)}`}</title>
                </circle>
              ),
            )}
          </g>
        );
      })}
    </Figure>
  );
}
