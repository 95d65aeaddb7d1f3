//! Dependency-free SVG charts for the Usage and Costs pages: stacked bars and multi-series lines,
//! rendered server-side as a string the templates embed with `|safe`. This module owns the chart
//! geometry (scale, "nice" ticks, label thinning, legend layout) and the escaping of every piece
//! of text it emits, since askama does not escape what is marked safe.
//!
//! Colours and strokes come from the `/* charts */` rules in `assets/app.css` via classes
//! (`chart`, `chart-grid`, `chart-axis`, `chart-bars`, `chart-series`, `chart-line`,
//! `chart-legend`, `chart-s0`..`chart-s7`): the Content-Security-Policy has no
//! `'unsafe-inline'` for styles, so `style` attributes would be dropped by the browser.
//! Coordinates are computed in tenths of a unit as integers, which keeps the output small and
//! byte-for-byte deterministic.
//!
//! SVG text scales with the drawing, so one drawing cannot keep its text readable from a phone
//! to a desktop. Each chart is therefore drawn twice, laid out for a wide and a narrow box
//! (fewer x labels, the legend wrapped sooner), inside a `chart-frame` whose container query
//! shows the one that keeps the text at 11 px or more. Every bar and point carries its value as
//! a `<title>` (the hover text); a chart may mark its last label as a period still running and
//! link each label somewhere (e.g. an MRR day to that day's movements).

use std::fmt::{self, Write as _};

/// One named row of values, aligned with the chart's labels.
pub struct Series {
    pub name: String,
    pub values: Vec<f64>,
}

/// A layout: the drawing's width in user units and how many x labels it prints at most.
/// The stylesheet shows `wide` in boxes of 660 px or more (text ≥ 11 px) and `narrow` below,
/// never wider than 540 px (text ≤ 18 px).
struct Size {
    width: f64,
    max_x_labels: usize,
    class: &'static str,
}

const WIDE: Size = Size {
    width: 720.0,
    max_x_labels: 8,
    class: "chart-wide",
};
const NARROW: Size = Size {
    width: 360.0,
    max_x_labels: 4,
    class: "chart-narrow",
};
/// The "no data" placeholder's width: narrow, so that its text stays readable on a phone.
const EMPTY_WIDTH: i64 = 360;
/// Height of the chart without a legend; the legend adds rows on top so that the plot keeps the
/// same size whatever the number of series.
const BASE_HEIGHT: f64 = 220.0;
const FONT_SIZE: f64 = 12.0;
/// A generous average glyph width for `FONT_SIZE` in system-ui, used to keep labels apart
/// without measuring text (which the server cannot do).
const CHAR_W: f64 = 7.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 24.0;
const RIGHT: f64 = 12.0;
const LEGEND_ROW: f64 = 18.0;
const X_LABEL_CHARS: usize = 14;
const LEGEND_CHARS: usize = 24;
/// Values beyond this are clamped so that stacked sums and tick arithmetic stay finite.
const MAX_VALUE: f64 = 1e300;
/// Anything smaller is indistinguishable from zero on a 200-unit-high plot, and the tick steps
/// for it would fall into subnormal numbers.
const MIN_VALUE: f64 = 1e-300;
const PALETTE: usize = 8;
const NO_DATA: &str = "No data for this period";
/// The legend's note for a last label still running.
const PARTIAL_NOTE: &str = "so far (period not over)";

/// What a chart may carry besides its values.
#[derive(Default, Clone, Copy)]
pub struct Marks<'a> {
    /// The last label is a period still running (today, this week): its bars or point are
    /// drawn lighter, its hover text and the legend say so.
    pub partial_last: bool,
    /// Where each label's bars or point lead, aligned with the labels.
    pub links: Option<&'a [String]>,
}

/// Both layouts of a chart in their frame, or the placeholder when there is nothing to draw.
fn framed(aria_label: &str, draw: impl Fn(&Size) -> Option<String>) -> String {
    match (draw(&WIDE), draw(&NARROW)) {
        (Some(wide), Some(narrow)) => format!("<div class=\"chart-frame\">{wide}{narrow}</div>"),
        _ => empty(aria_label),
    }
}

/// Vertical bars, one per label, stacked when several series are given (e.g. cost per provider per day).
pub fn bars(
    labels: &[String],
    series: &[Series],
    format_value: &dyn Fn(f64) -> String,
    aria_label: &str,
) -> String {
    bars_with(labels, series, format_value, aria_label, Marks::default())
}

/// [`bars`] with marks.
pub fn bars_with(
    labels: &[String],
    series: &[Series],
    format_value: &dyn Fn(f64) -> String,
    aria_label: &str,
    marks: Marks<'_>,
) -> String {
    framed(aria_label, |size| {
        draw_bars(size, labels, series, format_value, aria_label, marks)
    })
}

fn draw_bars(
    size: &Size,
    labels: &[String],
    series: &[Series],
    format_value: &dyn Fn(f64) -> String,
    aria_label: &str,
    marks: Marks<'_>,
) -> Option<String> {
    let values = clean(labels.len(), series);
    let max = (0..labels.len())
        .map(|i| values.iter().map(|v| v[i]).sum::<f64>())
        .fold(0.0, f64::max);
    stacked(
        size,
        labels,
        series,
        &values,
        nice_scale(max),
        format_value,
        aria_label,
        marks,
    )
}

/// Bars stacked upwards for positive values and downwards for negative ones, one per label
/// (e.g. MRR movements per day: new and expansion above zero, contraction and churn below).
pub fn diverging_bars(
    labels: &[String],
    series: &[Series],
    format_value: &dyn Fn(f64) -> String,
    aria_label: &str,
) -> String {
    diverging_bars_with(labels, series, format_value, aria_label, Marks::default())
}

/// [`diverging_bars`] with marks.
pub fn diverging_bars_with(
    labels: &[String],
    series: &[Series],
    format_value: &dyn Fn(f64) -> String,
    aria_label: &str,
    marks: Marks<'_>,
) -> String {
    framed(aria_label, |size| {
        draw_diverging(size, labels, series, format_value, aria_label, marks)
    })
}

fn draw_diverging(
    size: &Size,
    labels: &[String],
    series: &[Series],
    format_value: &dyn Fn(f64) -> String,
    aria_label: &str,
    marks: Marks<'_>,
) -> Option<String> {
    let n = labels.len();
    let values: Vec<Vec<f64>> = series
        .iter()
        .map(|s| {
            (0..n)
                .map(|i| match s.values.get(i) {
                    Some(&v) if v.is_finite() && v.abs() >= MIN_VALUE => {
                        v.clamp(-MAX_VALUE, MAX_VALUE)
                    }
                    _ => 0.0,
                })
                .collect()
        })
        .collect();
    let side = |positive: bool| -> f64 {
        (0..n)
            .map(|i| {
                values
                    .iter()
                    .map(|v| {
                        if (v[i] > 0.0) == positive {
                            v[i].abs()
                        } else {
                            0.0
                        }
                    })
                    .sum::<f64>()
            })
            .fold(0.0, f64::max)
    };
    let scale = diverging_scale(side(true), side(false));
    stacked(
        size,
        labels,
        series,
        &values,
        scale,
        format_value,
        aria_label,
        marks,
    )
}

/// Draws one bar per label, each series' segment stacked on the previous ones: upwards from
/// zero for positive values, downwards for negative ones.
#[allow(clippy::too_many_arguments)]
fn stacked(
    size: &Size,
    labels: &[String],
    series: &[Series],
    values: &[Vec<f64>],
    scale: Option<Scale>,
    format_value: &dyn Fn(f64) -> String,
    aria_label: &str,
    marks: Marks<'_>,
) -> Option<String> {
    let n = labels.len();
    let frame = Frame::new(size, labels, series, scale, format_value, marks)?;
    let mut out = String::new();
    frame.open(&mut out, aria_label);
    frame.grid(&mut out);
    let slot = frame.plot_w / n as f64;
    // Bars keep a gap between them, and a lone bar does not fill the whole plot.
    let bar_w = (slot * 0.7).min(48.0);
    let (mut up, mut down) = (vec![0.0; n], vec![0.0; n]);
    for (s, (ser, vals)) in series.iter().zip(values).enumerate() {
        put(
            &mut out,
            format_args!("<g class=\"chart-bars chart-s{}\">", s % PALETTE),
        );
        for (i, &v) in vals.iter().enumerate() {
            if v == 0.0 {
                continue;
            }
            let center = frame.left + slot * (i as f64 + 0.5);
            let x0 = tenths(center - bar_w / 2.0);
            let x1 = tenths(center + bar_w / 2.0);
            // Rounding segment boundaries rather than heights makes the stacked segments add up
            // exactly to the bar of the total.
            let cum = if v > 0.0 { &mut up[i] } else { &mut down[i] };
            let a = frame.y(*cum);
            *cum += v;
            let b = frame.y(*cum);
            let partial = marks.partial_last && i + 1 == n;
            open_link(&mut out, marks, i);
            put(
                &mut out,
                format_args!(
                    "<rect{} x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"><title>{}</title></rect>",
                    if partial {
                        " class=\"chart-partial\""
                    } else {
                        ""
                    },
                    T(x0),
                    T(a.min(b)),
                    T(x1 - x0),
                    T((a - b).abs()),
                    Esc(&tooltip(&labels[i], &ser.name, &format_value(v), partial)),
                ),
            );
            close_link(&mut out, marks, i);
        }
        out.push_str("</g>");
    }
    frame.x_axis(&mut out, labels, |i| frame.left + slot * (i as f64 + 0.5));
    frame.legend(&mut out, series);
    out.push_str("</svg>");
    Some(out)
}

/// Opens label `i`'s link, if the chart has one for it.
fn open_link(out: &mut String, marks: Marks<'_>, i: usize) {
    if let Some(href) = marks.links.and_then(|l| l.get(i)) {
        put(out, format_args!("<a href=\"{}\">", Esc(href)));
    }
}

fn close_link(out: &mut String, marks: Marks<'_>, i: usize) {
    if marks.links.and_then(|l| l.get(i)).is_some() {
        out.push_str("</a>");
    }
}

/// A line per series over the same labels (e.g. latency p50/p95 per day).
pub fn lines(
    labels: &[String],
    series: &[Series],
    format_value: &dyn Fn(f64) -> String,
    aria_label: &str,
) -> String {
    lines_with(labels, series, format_value, aria_label, Marks::default())
}

/// [`lines`] with marks.
pub fn lines_with(
    labels: &[String],
    series: &[Series],
    format_value: &dyn Fn(f64) -> String,
    aria_label: &str,
    marks: Marks<'_>,
) -> String {
    framed(aria_label, |size| {
        draw_lines(size, labels, series, format_value, aria_label, marks)
    })
}

fn draw_lines(
    size: &Size,
    labels: &[String],
    series: &[Series],
    format_value: &dyn Fn(f64) -> String,
    aria_label: &str,
    marks: Marks<'_>,
) -> Option<String> {
    let values = clean(labels.len(), series);
    let peaks: Vec<f64> = (0..labels.len())
        .map(|i| values.iter().map(|v| v[i]).fold(0.0, f64::max))
        .collect();
    let max = peaks.iter().copied().fold(0.0, f64::max);
    let frame = Frame::new(size, labels, series, nice_scale(max), format_value, marks)?;
    let mut out = String::new();
    frame.open(&mut out, aria_label);
    frame.grid(&mut out);

    let n = labels.len();
    let x_at = |i: usize| {
        if n == 1 {
            frame.left + frame.plot_w / 2.0
        } else {
            frame.left + frame.plot_w * i as f64 / (n - 1) as f64
        }
    };
    // Dense series get smaller markers so that they do not merge into a thick band.
    let r = if n <= 62 { "3" } else { "1.5" };
    for (s, (ser, vals)) in series.iter().zip(&values).enumerate() {
        put(
            &mut out,
            format_args!(
                "<g class=\"chart-series chart-s{}\"><polyline class=\"chart-line\" points=\"",
                s % PALETTE
            ),
        );
        for (i, &v) in vals.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            put(
                &mut out,
                format_args!("{sep}{},{}", T(tenths(x_at(i))), T(frame.y(v))),
            );
        }
        out.push_str("\"/>");
        for (i, &v) in vals.iter().enumerate() {
            let partial = marks.partial_last && i + 1 == n;
            open_link(&mut out, marks, i);
            put(
                &mut out,
                format_args!(
                    "<circle{} cx=\"{}\" cy=\"{}\" r=\"{r}\"><title>{}</title></circle>",
                    if partial {
                        " class=\"chart-partial\""
                    } else {
                        ""
                    },
                    T(tenths(x_at(i))),
                    T(frame.y(v)),
                    Esc(&tooltip(&labels[i], &ser.name, &format_value(v), partial)),
                ),
            );
            close_link(&mut out, marks, i);
        }
        out.push_str("</g>");
    }
    frame.x_axis(&mut out, labels, x_at);
    frame.legend(&mut out, series);
    out.push_str("</svg>");
    Some(out)
}

/// Values per series, padded or cut to the number of labels, with everything that cannot be
/// drawn (NaN, infinities, negatives) as zero.
fn clean(n: usize, series: &[Series]) -> Vec<Vec<f64>> {
    series
        .iter()
        .map(|s| {
            (0..n)
                .map(|i| match s.values.get(i) {
                    Some(&v) if v.is_finite() && v >= MIN_VALUE => v.min(MAX_VALUE),
                    _ => 0.0,
                })
                .collect()
        })
        .collect()
}

/// The placeholder shown instead of a chart, so that pages never divide by an empty range.
fn empty(aria_label: &str) -> String {
    format!(
        "<svg class=\"chart chart-empty\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {EMPTY_WIDTH} 48\" \
         width=\"100%\" font-size=\"{FONT_SIZE}\" role=\"img\" aria-label=\"{}\">\
         <text x=\"{}\" y=\"28\" text-anchor=\"middle\">{NO_DATA}</text></svg>",
        Esc(&format!("{aria_label}: {NO_DATA}")),
        EMPTY_WIDTH / 2,
    )
}

fn tooltip(label: &str, name: &str, value: &str, partial: bool) -> String {
    let so_far = if partial { " (so far)" } else { "" };
    if name.is_empty() {
        format!("{label}: {value}{so_far}")
    } else {
        format!("{label}: {name} {value}{so_far}")
    }
}

/// The layout shared by both chart kinds: the value scale and where the plot sits.
struct Frame {
    width: f64,
    class: &'static str,
    max_x_labels: usize,
    scale: Scale,
    /// Formatted tick labels, computed once because they also decide the left margin.
    tick_labels: Vec<String>,
    legend: Vec<LegendItem>,
    /// The note for a partial last label, after the series' names.
    partial_note: Option<LegendItem>,
    height: f64,
    left: f64,
    plot_top: f64,
    plot_w: f64,
    plot_h: f64,
}

struct LegendItem {
    x: f64,
    row: usize,
    text: String,
}

impl Frame {
    /// `None` when there is nothing to draw: no labels, no series, or every value zero.
    fn new(
        size: &Size,
        labels: &[String],
        series: &[Series],
        scale: Option<Scale>,
        format_value: &dyn Fn(f64) -> String,
        marks: Marks<'_>,
    ) -> Option<Self> {
        let width = size.width;
        if labels.is_empty() || series.is_empty() {
            return None;
        }
        let scale = scale?;
        let tick_labels: Vec<String> = scale.ticks.iter().map(|&t| format_value(t)).collect();
        let widest = tick_labels
            .iter()
            .map(|l| l.chars().count())
            .max()
            .unwrap_or(1);
        let left = (widest as f64 * CHAR_W + 10.0).clamp(36.0, 160.0);
        let plot_w = width - left - RIGHT;

        let mut legend = Vec::new();
        let (mut x, mut row) = (left, 0);
        let mut place = |text: String| {
            let w = 14.0 + text.chars().count() as f64 * CHAR_W + 16.0;
            if x > left && x + w > width - RIGHT {
                x = left;
                row += 1;
            }
            let item = LegendItem { x, row, text };
            x += w;
            item
        };
        if series.len() > 1 {
            for s in series {
                legend.push(place(clip(&s.name, LEGEND_CHARS)));
            }
        }
        let partial_note = marks.partial_last.then(|| place(PARTIAL_NOTE.to_string()));
        let legend_h = partial_note
            .as_ref()
            .or(legend.last())
            .map_or(0.0, |item| (item.row + 1) as f64 * LEGEND_ROW);
        let plot_top = TOP + legend_h;
        let height = BASE_HEIGHT + legend_h;
        Some(Self {
            width,
            class: size.class,
            max_x_labels: size.max_x_labels,
            scale,
            tick_labels,
            legend,
            partial_note,
            height,
            left,
            plot_top,
            plot_w,
            plot_h: height - plot_top - BOTTOM,
        })
    }

    fn bottom(&self) -> f64 {
        self.plot_top + self.plot_h
    }

    /// The y coordinate of a value, in tenths.
    fn y(&self, v: f64) -> i64 {
        let range = self.scale.top - self.scale.floor;
        tenths(self.bottom() - (v - self.scale.floor) / range * self.plot_h)
    }

    fn open(&self, out: &mut String, aria_label: &str) {
        put(
            out,
            format_args!(
                "<svg class=\"chart {}\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {} {}\" \
                 width=\"100%\" font-size=\"{FONT_SIZE}\" role=\"img\" aria-label=\"{}\">",
                self.class,
                T(tenths(self.width)),
                T(tenths(self.height)),
                Esc(aria_label),
            ),
        );
    }

    /// Horizontal gridlines with their value labels; drawn first so that data sits on top.
    fn grid(&self, out: &mut String) {
        let x0 = T(tenths(self.left));
        let x1 = T(tenths(self.left + self.plot_w));
        out.push_str("<g class=\"chart-grid\">");
        for &t in self.scale.ticks.iter().skip(1) {
            let y = T(self.y(t));
            put(
                out,
                format_args!("<line x1=\"{x0}\" y1=\"{y}\" x2=\"{x1}\" y2=\"{y}\"/>"),
            );
        }
        out.push_str("</g><g class=\"chart-axis\" text-anchor=\"end\">");
        let lx = T(tenths(self.left - 6.0));
        for (&t, label) in self.scale.ticks.iter().zip(&self.tick_labels) {
            put(
                out,
                format_args!(
                    "<text x=\"{lx}\" y=\"{}\">{}</text>",
                    // A third of the font size below the line centres the digits on it.
                    T(self.y(t) + tenths(FONT_SIZE / 3.0)),
                    Esc(label)
                ),
            );
        }
        out.push_str("</g>");
    }

    /// The baseline and the thinned x labels, each kept inside the viewBox.
    fn x_axis(&self, out: &mut String, labels: &[String], x_at: impl Fn(usize) -> f64) {
        let base = T(tenths(self.bottom()));
        put(
            out,
            format_args!(
                "<g class=\"chart-axis\" text-anchor=\"middle\"><line x1=\"{}\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\"/>",
                T(tenths(self.left)),
                T(tenths(self.left + self.plot_w)),
            ),
        );
        let widest = labels
            .iter()
            .map(|l| l.chars().count().min(X_LABEL_CHARS))
            .max()
            .unwrap_or(1);
        let min_gap = widest as f64 * CHAR_W + 12.0;
        let fit = (self.plot_w / min_gap) as usize;
        let placed: Vec<(f64, String)> = thin(labels.len(), fit.clamp(2, self.max_x_labels))
            .into_iter()
            .map(|i| {
                let text = clip(&labels[i], X_LABEL_CHARS);
                let half = text.chars().count() as f64 * CHAR_W / 2.0;
                // max/min rather than clamp: clamp panics if a label were ever wider than the chart.
                let x = x_at(i).min(self.width - 4.0 - half).max(4.0 + half);
                (x, text)
            })
            .collect();
        // Keeping the end labels inside the viewBox pulls them towards their neighbours; the
        // ends say which period is shown, so an intermediate label gives way instead.
        let last_x = placed.last().map_or(0.0, |p| p.0);
        let mut prev_x = f64::NEG_INFINITY;
        let ty = T(tenths(self.bottom() + 16.0));
        for (k, (x, text)) in placed.iter().enumerate() {
            let is_end = k == 0 || k + 1 == placed.len();
            if !is_end && (x - prev_x < min_gap || last_x - x < min_gap) {
                continue;
            }
            prev_x = *x;
            put(
                out,
                format_args!(
                    "<text x=\"{}\" y=\"{ty}\">{}</text>",
                    T(tenths(*x)),
                    Esc(text)
                ),
            );
        }
        out.push_str("</g>");
    }

    fn legend(&self, out: &mut String, series: &[Series]) {
        if self.legend.is_empty() && self.partial_note.is_none() {
            return;
        }
        out.push_str("<g class=\"chart-legend\">");
        if let Some(item) = &self.partial_note {
            let y = TOP + item.row as f64 * LEGEND_ROW;
            put(
                out,
                format_args!(
                    "<g><rect class=\"chart-partial-key\" x=\"{}\" y=\"{}\" width=\"10\" height=\"10\"/>\
                     <text x=\"{}\" y=\"{}\">{}</text></g>",
                    T(tenths(item.x)),
                    T(tenths(y + 1.0)),
                    T(tenths(item.x + 14.0)),
                    T(tenths(y + 10.0)),
                    Esc(&item.text),
                ),
            );
        }
        for (s, (item, ser)) in self.legend.iter().zip(series).enumerate() {
            let y = TOP + item.row as f64 * LEGEND_ROW;
            put(
                out,
                format_args!(
                    "<g class=\"chart-s{}\"><rect x=\"{}\" y=\"{}\" width=\"10\" height=\"10\"/>\
                     <text x=\"{}\" y=\"{}\">{}",
                    s % PALETTE,
                    T(tenths(item.x)),
                    T(tenths(y + 1.0)),
                    T(tenths(item.x + 14.0)),
                    T(tenths(y + 10.0)),
                    Esc(&item.text),
                ),
            );
            // A clipped name keeps its full text as a tooltip.
            if item.text != ser.name {
                put(out, format_args!("<title>{}</title>", Esc(&ser.name)));
            }
            out.push_str("</text></g>");
        }
        out.push_str("</g>");
    }
}

/// The y axis: `top` is the highest gridline, `floor` the lowest (0 unless values go below
/// zero) and `ticks` run from the one to the other.
#[derive(Debug, PartialEq)]
struct Scale {
    top: f64,
    floor: f64,
    ticks: Vec<f64>,
}

/// A scale for values from `-depth` to `max` (both ≥ 0): the step [`nice_scale`] picks for
/// the larger of the two, repeated on both sides of zero.
fn diverging_scale(max: f64, depth: f64) -> Option<Scale> {
    let larger = nice_scale(max.max(depth))?;
    let step = larger.ticks.get(1).copied()?;
    let count = |v: f64| (v / step - 1e-9).ceil().max(0.0) as i32;
    let (up, down) = (count(max), count(depth));
    if down == 0 {
        return Some(larger);
    }
    let ticks: Vec<f64> = (-down..=up).map(|i| f64::from(i) * step).collect();
    Some(Scale {
        top: f64::from(up) * step,
        floor: -f64::from(down) * step,
        ticks,
    })
}

/// Picks the smallest step of the form {1, 2, 2.5, 5} × 10ⁿ that covers `max` in at most five
/// intervals. Consecutive candidates differ by at most 2.5×, so the first one that fits needs at
/// least three intervals: the axis always has 3–5 gridlines above zero.
fn nice_scale(max: f64) -> Option<Scale> {
    if !(max.is_finite() && max >= MIN_VALUE) {
        return None;
    }
    let magnitude = max.log10().floor() as i32;
    // Starting two decades down guards against log10 landing one off at exact powers of ten.
    for exp in magnitude - 2..=magnitude + 2 {
        for mult in [1.0, 2.0, 2.5, 5.0] {
            let value = |i: u32| decimal(f64::from(i) * mult, exp);
            let step = value(1);
            // The slack keeps e.g. 0.6 / 0.2 = 2.9999999999999996 from asking for a fourth tick.
            let k = (max / step - 1e-9).ceil().max(1.0);
            if k <= 5.0 {
                let k = k as u32;
                let ticks: Vec<f64> = (0..=k).map(value).collect();
                let top = value(k);
                return (top.is_finite() && top > 0.0).then_some(Scale {
                    top,
                    floor: 0.0,
                    ticks,
                });
            }
        }
    }
    None
}

/// `mantissa × 10^exp` as the double nearest to that decimal. Going through the decimal text
/// rather than multiplying by `powi` (exact only up to 10^22) keeps ticks like 0.6 or 2e-251
/// free of representation noise that a formatter would otherwise print.
fn decimal(mantissa: f64, exp: i32) -> f64 {
    format!("{mantissa}e{exp}").parse().unwrap_or(f64::NAN)
}

/// Indices of the x labels to print: at most `max` (≥ 2), evenly spaced, always the first and
/// the last.
fn thin(n: usize, max: usize) -> Vec<usize> {
    if n <= max {
        return (0..n).collect();
    }
    let last = n - 1;
    let step = last.div_ceil(max - 1);
    let mut shown: Vec<usize> = (0..last).step_by(step).collect();
    // A regular label crowding the last one would overlap it.
    if shown.len() > 1 && shown.last().is_some_and(|&i| last - i < step.div_ceil(2)) {
        shown.pop();
    }
    shown.push(last);
    shown
}

/// Shortens text for display; the full text stays available in the tooltip.
fn clip(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max_chars - 1).collect();
        out.push('…');
        out
    }
}

fn tenths(v: f64) -> i64 {
    // `as` saturates and maps NaN to 0, so a degenerate layout cannot print "NaN".
    (v * 10.0).round() as i64
}

/// A coordinate in tenths, printed with at most one decimal.
struct T(i64);

impl fmt::Display for T {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let (int, frac) = (self.0.unsigned_abs() / 10, self.0.unsigned_abs() % 10);
        if frac == 0 {
            write!(f, "{sign}{int}")
        } else {
            write!(f, "{sign}{int}.{frac}")
        }
    }
}

/// Text escaped for both XML content and attribute values. Control characters that XML 1.0
/// forbids are replaced, since one stray byte in a label would make the whole SVG ill-formed.
struct Esc<'a>(&'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '&' => f.write_str("&amp;")?,
                '<' => f.write_str("&lt;")?,
                '>' => f.write_str("&gt;")?,
                '"' => f.write_str("&quot;")?,
                '\'' => f.write_str("&#39;")?,
                '\t' | '\n' | '\r' => f.write_char(' ')?,
                c if c.is_control() => f.write_char('\u{FFFD}')?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

fn put(out: &mut String, args: fmt::Arguments<'_>) {
    // Writing into a String cannot fail; the Result only exists for other writers.
    let _ = out.write_fmt(args);
}

#[cfg(test)]
mod tests {
    use super::*;

    // The wide layout alone, as one SVG; `framed` is tested on its own below.
    fn bars(l: &[String], s: &[Series], f: &dyn Fn(f64) -> String, a: &str) -> String {
        draw_bars(&WIDE, l, s, f, a, Marks::default()).unwrap_or_else(|| empty(a))
    }

    fn lines(l: &[String], s: &[Series], f: &dyn Fn(f64) -> String, a: &str) -> String {
        draw_lines(&WIDE, l, s, f, a, Marks::default()).unwrap_or_else(|| empty(a))
    }

    fn diverging_bars(l: &[String], s: &[Series], f: &dyn Fn(f64) -> String, a: &str) -> String {
        draw_diverging(&WIDE, l, s, f, a, Marks::default()).unwrap_or_else(|| empty(a))
    }

    /// The x labels a drawing prints.
    fn x_labels(svg: &str) -> usize {
        let axis = svg.rfind("<g class=\"chart-axis\"").expect("x axis");
        texts(&svg[axis..], "<g")
    }

    #[test]
    fn each_chart_comes_wide_and_narrow() {
        let l: Vec<String> = (1..=30).map(|d| format!("11-{d:02}")).collect();
        let v: Vec<f64> = (1..=30).map(f64::from).collect();
        let html = super::bars(&l, &[series("a", &v)], &money, "Calls");
        assert!(html.starts_with("<div class=\"chart-frame\"><svg class=\"chart chart-wide\""));
        let narrow_at = html
            .find("<svg class=\"chart chart-narrow\"")
            .expect("narrow");
        let (wide, narrow) = html.split_at(narrow_at);
        let wide = &wide["<div class=\"chart-frame\">".len()..];
        let narrow = narrow.strip_suffix("</div>").expect("frame closed");
        assert_well_formed(wide);
        assert_well_formed(narrow);
        assert!(narrow.contains("viewBox=\"0 0 360 "));
        assert!(x_labels(narrow) <= NARROW.max_x_labels && x_labels(wide) > x_labels(narrow));
        // Nothing to draw is the one placeholder, not a frame.
        let none = super::bars(&l, &[series("a", &[])], &money, "Calls");
        assert!(none.starts_with("<svg") && none.contains(NO_DATA));
    }

    #[test]
    fn the_running_period_is_marked_and_labels_link() {
        let l = labels(3);
        let links: Vec<String> = (1..=3)
            .map(|d| format!("/revenue?day=2026-01-0{d}&x"))
            .collect();
        let marks = Marks {
            partial_last: true,
            links: Some(&links),
        };
        for svg in [
            draw_bars(
                &WIDE,
                &l,
                &[series("a", &[1.0, 2.0, 3.0])],
                &money,
                "x",
                marks,
            ),
            draw_lines(
                &WIDE,
                &l,
                &[series("a", &[1.0, 2.0, 3.0])],
                &money,
                "x",
                marks,
            ),
        ] {
            let svg = svg.expect("drawn");
            assert_well_formed(&svg);
            assert_eq!(svg.matches("class=\"chart-partial\"").count(), 1, "{svg}");
            assert!(svg.contains("2026-01-03: a $3.00 (so far)"));
            assert!(svg.contains("2026-01-02: a $2.00</title>"));
            assert!(svg.contains(PARTIAL_NOTE) && svg.contains("chart-partial-key"));
            assert!(svg.contains("<a href=\"/revenue?day=2026-01-01&amp;x\">"));
            assert_eq!(svg.matches("<a href").count(), 3);
        }
    }

    fn money(v: f64) -> String {
        format!("${v:.2}")
    }

    fn labels(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("2026-01-{:02}", i % 28 + 1))
            .collect()
    }

    fn series(name: &str, values: &[f64]) -> Series {
        Series {
            name: name.into(),
            values: values.to_vec(),
        }
    }

    /// Tag balance and the absence of unprintable numbers: enough to catch broken markup
    /// without pulling in an XML parser.
    fn assert_well_formed(svg: &str) {
        assert!(svg.starts_with("<svg "), "{svg}");
        assert!(svg.ends_with("</svg>"), "{svg}");
        assert_eq!(svg.matches("<svg").count(), 1);
        for bad in ["NaN", "inf", "<script", "style="] {
            assert!(!svg.contains(bad), "{bad} in {svg}");
        }
        let mut stack: Vec<&str> = Vec::new();
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            let end = rest[start..].find('>').expect("unclosed tag") + start;
            let tag = &rest[start + 1..end];
            assert!(!tag.contains('<'), "stray < in {tag}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop(), Some(name), "mismatched </{name}>");
            } else if !tag.ends_with('/') {
                stack.push(tag.split(' ').next().unwrap_or(tag));
            }
            // Attribute values must not contain raw quotes or angle brackets.
            assert_eq!(tag.matches('"').count() % 2, 0, "odd quotes in {tag}");
            rest = &rest[end + 1..];
        }
        assert!(stack.is_empty(), "unclosed {stack:?}");
        assert!(!rest.contains('>'), "stray > after last tag");
    }

    fn texts(svg: &str, group: &str) -> usize {
        let start = svg.find(group).expect("group present");
        let end = svg[start..].find("</g>").expect("group closed") + start;
        svg[start..end].matches("<text").count()
    }

    /// Heights of the rects in the order they were drawn.
    fn rect_heights(svg: &str) -> Vec<f64> {
        svg.split("<rect ")
            .skip(1)
            .filter_map(|r| {
                // Legend swatches are self-closing; bars carry a tooltip.
                let tag = &r[..r.find('>')?];
                if tag.ends_with('/') {
                    return None;
                }
                let h = tag.split("height=\"").nth(1)?;
                h[..h.find('"')?].parse().ok()
            })
            .collect()
    }

    #[test]
    fn hostile_text_is_escaped() {
        let evil = "<script>alert('x')</script>&\"";
        let l = vec![evil.to_string(), "ok".into()];
        let s = [series(evil, &[1.0, 2.0]), series("b", &[3.0, 0.5])];
        let fmt = |v: f64| format!("<b>{v}</b>");
        for svg in [bars(&l, &s, &fmt, evil), lines(&l, &s, &fmt, evil)] {
            assert_well_formed(&svg);
            assert!(!svg.contains("<script"));
            assert!(!svg.contains("<b>"));
            assert!(svg.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"));
        }
        let empty = bars(&[], &[], &money, evil);
        assert_well_formed(&empty);
        assert!(!empty.contains("<script"));
    }

    #[test]
    fn control_characters_do_not_break_markup() {
        let l = vec!["a\u{0}b\nc".to_string()];
        let svg = bars(&l, &[series("x\u{1b}", &[1.0])], &money, "t");
        assert_well_formed(&svg);
        assert!(!svg.contains('\u{0}') && !svg.contains('\u{1b}'));
    }

    #[test]
    fn empty_data_says_so() {
        let l = labels(3);
        let cases = [
            bars(&[], &[series("a", &[1.0])], &money, "Cost"),
            bars(&l, &[], &money, "Cost"),
            bars(&l, &[series("a", &[])], &money, "Cost"),
            bars(&l, &[series("a", &[0.0, 0.0, 0.0])], &money, "Cost"),
            lines(
                &l,
                &[series("a", &[f64::NAN, -3.0, f64::INFINITY])],
                &money,
                "Latency",
            ),
            lines(&l, &[series("a", &[1e-320])], &money, "Latency"),
        ];
        for svg in cases {
            assert_well_formed(&svg);
            assert!(svg.contains("No data for this period"), "{svg}");
            assert!(svg.contains("chart-empty"));
        }
    }

    #[test]
    fn nice_ticks() {
        let ticks = |max: f64| nice_scale(max).expect("scale").ticks;
        assert_eq!(ticks(0.7), [0.0, 0.2, 0.4, 0.6, 0.8]);
        assert_eq!(ticks(0.6), [0.0, 0.2, 0.4, 0.6]);
        assert_eq!(ticks(7.0), [0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(ticks(1234.0), [0.0, 250.0, 500.0, 750.0, 1000.0, 1250.0]);
        assert_eq!(
            ticks(98_765.0),
            [0.0, 20_000.0, 40_000.0, 60_000.0, 80_000.0, 100_000.0]
        );
        assert_eq!(ticks(1.0), [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(ticks(1000.0), [0.0, 200.0, 400.0, 600.0, 800.0, 1000.0]);
        assert_eq!(ticks(0.012), [0.0, 0.0025, 0.005, 0.0075, 0.01, 0.0125]);
        for max in [
            1e-250, 3e-7, 0.013, 1.0, 9.99, 10.0, 10.01, 333.0, 4e12, 1e300,
        ] {
            let s = nice_scale(max).expect("scale");
            let gridlines = s.ticks.len() - 1;
            assert!((3..=5).contains(&gridlines), "{max}: {:?}", s.ticks);
            // The slack that absorbs rounding may leave the top a hair under the maximum.
            assert!(s.top >= max * (1.0 - 1e-9), "{max}: {:?}", s.ticks);
        }
        assert_eq!(nice_scale(0.0), None);
        assert_eq!(nice_scale(f64::NAN), None);
        assert_eq!(nice_scale(f64::INFINITY), None);
    }

    #[test]
    fn stacked_bar_equals_bar_of_sum() {
        let l = labels(4);
        let a = [1.3, 2.0, 0.0, 7.77];
        let b = [3.1, 0.4, 5.55, 1.01];
        let c = [0.05, 2.2, 1.0, 0.0];
        let sum: Vec<f64> = (0..4).map(|i| a[i] + b[i] + c[i]).collect();
        let stacked = bars(
            &l,
            &[series("a", &a), series("b", &b), series("c", &c)],
            &money,
            "Cost",
        );
        // A one-series chart has no legend, so give the reference the same legend rows.
        let single = bars(
            &l,
            &[series("a", &sum), series("b", &[]), series("c", &[])],
            &money,
            "Cost",
        );
        assert_well_formed(&stacked);
        let hs = rect_heights(&stacked);
        let hsum = rect_heights(&single);
        // Drawn series by series, skipping zeros: a0 a1 a3, b0..b3, c0 c1 c2.
        let per_label = [
            hs[0] + hs[3] + hs[7],
            hs[1] + hs[4] + hs[8],
            hs[5] + hs[9],
            hs[2] + hs[6],
        ];
        assert_eq!(hsum.len(), 4);
        for i in 0..4 {
            assert!(
                (per_label[i] - hsum[i]).abs() < 1e-9,
                "{per_label:?} vs {hsum:?}"
            );
        }
    }

    #[test]
    fn x_labels_are_thinned() {
        for n in [1, 2, 7, 8, 9, 30, 31, 90, 364, 365, 366, 1000] {
            let shown = thin(n, WIDE.max_x_labels);
            assert!(shown.len() <= WIDE.max_x_labels, "{n}: {shown:?}");
            assert_eq!(shown.first(), Some(&0));
            assert_eq!(shown.last(), Some(&(n - 1)));
            assert!(shown.windows(2).all(|w| w[0] < w[1]));
        }
        let l: Vec<String> = (0..365).map(|d| format!("day {d}")).collect();
        let v: Vec<f64> = (0..365).map(|d| f64::from(d % 17)).collect();
        for svg in [
            bars(&l, &[series("a", &v)], &money, "Year"),
            lines(&l, &[series("a", &v)], &money, "Year"),
        ] {
            assert_well_formed(&svg);
            let axis = svg.rfind("<g class=\"chart-axis\"").expect("x axis");
            let n = texts(&svg[axis..], "<g");
            let xs: Vec<f64> = svg[axis..]
                .split("<text x=\"")
                .skip(1)
                .filter_map(|t| t[..t.find('"')?].parse().ok())
                .collect();
            // "day 364" is 7 characters: printed labels must not overlap.
            assert!(xs.windows(2).all(|w| w[1] - w[0] >= 7.0 * CHAR_W), "{xs:?}");
            assert!((2..=WIDE.max_x_labels).contains(&n), "{n}");
            assert!(svg[axis..].contains(">day 0<") && svg[axis..].contains(">day 364<"));
        }
    }

    #[test]
    fn bad_values_become_zero_and_short_series_are_padded() {
        let l = labels(5);
        let s = [
            series("p50", &[f64::NAN, -1.0, f64::INFINITY, 4.0]),
            series("p95", &[f64::NEG_INFINITY, 1e308, 2.0]),
        ];
        for svg in [bars(&l, &s, &money, "x"), lines(&l, &s, &money, "x")] {
            assert_well_formed(&svg);
            assert!(svg.contains("chart-legend"));
        }
        let svg = lines(&l, &s[..1], &money, "x");
        assert_eq!(svg.matches("<circle").count(), 5);
        assert!(svg.contains("2026-01-01: p50 $0.00"));
        assert!(svg.contains("2026-01-04: p50 $4.00"));
        assert!(!svg.contains("chart-legend"));
    }

    #[test]
    fn numbers_have_at_most_one_decimal_and_output_is_deterministic() {
        let l = labels(13);
        let v: Vec<f64> = (0..13).map(|i| f64::from(i) * 1.2345 + 0.3333).collect();
        let s = [series("a", &v), series("b", &v[3..])];
        let svg = bars(&l, &s, &|v| format!("{v:.0}"), "x");
        assert_eq!(svg, bars(&l, &s, &|v| format!("{v:.0}"), "x"));
        for attr in svg.split('"').skip(1).step_by(2) {
            let numeric = attr
                .chars()
                .all(|c| c.is_ascii_digit() || c == '.' || c == '-');
            if let Some((_, frac)) = attr.split_once('.')
                && numeric
            {
                assert!(frac.len() <= 1, "{attr}");
            }
        }
        assert_eq!(T(0).to_string(), "0");
        assert_eq!(T(-15).to_string(), "-1.5");
        assert_eq!(T(7200).to_string(), "720");
    }

    #[test]
    fn single_label_and_tooltips() {
        let l = vec!["Jan".to_string()];
        let svg = bars(&l, &[series("", &[2.5])], &money, "Cost");
        assert_well_formed(&svg);
        assert!(svg.contains("<title>Jan: $2.50</title>"));
        assert!(svg.contains("role=\"img\"") && svg.contains("aria-label=\"Cost\""));
        assert!(svg.contains("width=\"100%\""));
        let svg = lines(&l, &[series("p95", &[2.5])], &money, "Latency");
        assert_well_formed(&svg);
        assert!(svg.contains("<title>Jan: p95 $2.50</title>"));
    }

    #[test]
    fn diverging_bars_stack_both_ways_from_zero() {
        let svg = diverging_bars(
            &labels(2),
            &[
                series("New", &[300.0, 100.0]),
                series("Churn", &[-200.0, 0.0]),
                series("Contraction", &[-50.0, f64::NAN]),
            ],
            &money,
            "MRR movements",
        );
        assert_well_formed(&svg);
        // One step (100) serves both sides: gridlines from -300 to 300.
        for tick in ["$-300.00", "$0.00", "$300.00"] {
            assert!(svg.contains(&format!(">{tick}</text>")), "{tick} in {svg}");
        }
        assert!(!svg.contains("$400.00"));
        let s = diverging_scale(300.0, 250.0).expect("scale");
        assert_eq!((s.floor, s.top), (-300.0, 300.0));
        // The churn bar hangs from the zero line and the contraction continues below it.
        let plot = &svg[..svg.find("text-anchor=\"middle\"").expect("x axis")];
        let tops: Vec<(i64, i64)> = plot
            .match_indices("<rect x=")
            .filter_map(|(i, _)| {
                let tag = &plot[i..i + plot[i..].find('>')?];
                let num = |attr: &str| -> Option<i64> {
                    let v = tag
                        .split(&format!(" {attr}=\""))
                        .nth(1)?
                        .split('"')
                        .next()?;
                    Some((v.parse::<f64>().ok()? * 10.0).round() as i64)
                };
                Some((num("y")?, num("height")?))
            })
            .filter(|(_, h)| *h > 0)
            .collect();
        assert_eq!(tops.len(), 4, "{svg}");
        let (new_y, new_h) = tops[0];
        let (churn_y, churn_h) = tops[2];
        let (contraction_y, _) = tops[3];
        assert_eq!(new_y + new_h, churn_y, "both sides meet at zero");
        assert_eq!(churn_y + churn_h, contraction_y);
        assert_eq!(churn_h * 3, new_h * 2);
        // Nothing to draw either way is the empty placeholder.
        assert!(
            diverging_bars(&labels(2), &[series("x", &[0.0, -0.0])], &money, "m").contains(NO_DATA)
        );
    }
}
