/**
 * A small hand-written SVG bar chart (no chart library): one horizontal bar per scenario for its median
 * latency, a thin tick at its p99, grouped under headings. Plain SVG 1.1 that GitHub renders inline.
 */

export interface ChartBar {
  readonly label: string;
  readonly medianUs: number;
  readonly p99Us: number;
  /** A CSS colour for the bar. */
  readonly color: string;
}

export interface ChartGroup {
  readonly title: string;
  readonly bars: readonly ChartBar[];
}

const escapeXml = (text: string) =>
  text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

const formatUs = (us: number) => (us >= 1000 ? `${(us / 1000).toFixed(2)} ms` : `${us.toFixed(0)} µs`);

/** Render the groups as one SVG document. The scale is shared by all bars, so bars compare across groups. */
export function barChart(title: string, subtitle: string, groups: readonly ChartGroup[]): string {
  const width = 960;
  const labelWidth = 250;
  const valueWidth = 150;
  const plotWidth = width - labelWidth - valueWidth - 20;
  const rowHeight = 20;
  const headingHeight = 26;
  const top = 56;
  const all = groups.flatMap((group) => group.bars);
  // Scale to the largest median (not p99, whose outliers would flatten every bar); longer p99 ticks are clipped.
  const max = Math.max(...all.map((bar) => bar.medianUs)) * 1.15;
  const x = (us: number) => labelWidth + Math.min(plotWidth, (us / max) * plotWidth);
  const parts: string[] = [];
  let y = top;
  for (const group of groups) {
    parts.push(
      `<text x="10" y="${y + 17}" font-weight="bold" font-size="13">${escapeXml(group.title)}</text>`,
      `<line x1="10" x2="${width - 10}" y1="${y + headingHeight - 2}" y2="${y + headingHeight - 2}" stroke="#ddd"/>`,
    );
    y += headingHeight;
    for (const bar of group.bars) {
      const barEnd = x(bar.medianUs);
      const tick = x(bar.p99Us);
      parts.push(
        `<text x="${labelWidth - 8}" y="${y + 14}" text-anchor="end" font-size="12">${escapeXml(bar.label)}</text>`,
        `<rect x="${labelWidth}" y="${y + 3}" width="${Math.max(1, barEnd - labelWidth).toFixed(1)}" height="${rowHeight - 6}" fill="${bar.color}"/>`,
        `<line x1="${tick.toFixed(1)}" x2="${tick.toFixed(1)}" y1="${y + 1}" y2="${y + rowHeight - 1}" stroke="#333" stroke-width="1.5"/>`,
        `<text x="${width - valueWidth}" y="${y + 14}" font-size="12">${escapeXml(`${formatUs(bar.medianUs)}  (p99 ${formatUs(bar.p99Us)})`)}</text>`,
      );
      y += rowHeight;
    }
    y += 8;
  }
  const height = y + 10;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif">`,
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    `<text x="10" y="22" font-size="16" font-weight="bold">${escapeXml(title)}</text>`,
    `<text x="10" y="42" font-size="12" fill="#555">${escapeXml(subtitle)}</text>`,
    ...parts,
    '</svg>',
    '',
  ].join('\n');
}
