//! Small bar charts drawn on the server as inline SVG: no script, no inline style (colours are
//! SVG presentation attributes, which the CSP allows), and the numbers are also in a table
//! under the chart, so a screen reader or a text browser loses nothing.

use maud::{Markup, html};

/// One coloured series of a stacked bar chart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    pub name: String,
    /// One value per bar, in the order of the chart's labels.
    pub values: Vec<u64>,
}

/// Fill colours, each with at least 3:1 contrast against white (WCAG non-text contrast).
const PALETTE: [&str; 8] =
    ["#17603a", "#a4161a", "#0b5cad", "#7a4b00", "#6b2c91", "#1f6f78", "#9c2f6e", "#4b5563"];

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 180.0;
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 22.0;
const TOP: f64 = 8.0;
/// Room for the last bar's label.
const RIGHT: f64 = 24.0;

pub fn colour(index: usize) -> &'static str {
    PALETTE[index % PALETTE.len()]
}

/// A stacked bar chart: one bar per label, one colour per series, with a legend and the data
/// as a table in a `<details>`. `id` must be unique on the page (it names the chart's title).
pub fn stacked_bars(id: &str, title: &str, labels: &[String], series: &[Series]) -> Markup {
    let totals: Vec<u64> = (0..labels.len())
        .map(|i| series.iter().map(|s| s.values.get(i).copied().unwrap_or(0)).sum())
        .collect();
    let max = totals.iter().copied().max().unwrap_or(0).max(1);
    let plot_height = HEIGHT - BOTTOM - TOP;
    let slot = (WIDTH - LEFT - RIGHT) / labels.len().max(1) as f64;
    let bar = (slot * 0.8).max(1.0);
    let y_of = |v: u64| TOP + plot_height - plot_height * v as f64 / max as f64;
    // Label every bar when there are few; otherwise about eight evenly spaced labels.
    let label_every = labels.len().div_ceil(8).max(1);
    let mut rects = Vec::new();
    for (i, label) in labels.iter().enumerate() {
        let x = LEFT + slot * i as f64 + (slot - bar) / 2.0;
        let mut below = 0u64;
        for (s, serie) in series.iter().enumerate() {
            let v = serie.values.get(i).copied().unwrap_or(0);
            if v > 0 {
                let (top, bottom) = (y_of(below + v), y_of(below));
                let title = format!("{label}, {}: {v}", serie.name);
                rects.push(Rect { x, y: top, height: bottom - top, series: s, title });
            }
            below += v;
        }
    }
    let title_id = format!("{id}-title");
    let summary = format!("{title}: {} in total, at most {max} in one bar", totals.iter().sum::<u64>());
    html! {
        figure.chart id=(id) {
            svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-labelledby=(title_id) xmlns="http://www.w3.org/2000/svg" {
                title id=(title_id) { (summary) }
                line x1=(LEFT) y1=(TOP + plot_height) x2=(WIDTH - RIGHT) y2=(TOP + plot_height) stroke="#4b5563" stroke-width="1" {}
                line x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(TOP + plot_height) stroke="#4b5563" stroke-width="1" {}
                text x=(LEFT - 4.0) y=(TOP + 10.0) text-anchor="end" font-size="11" fill="#1b1f24" { (max) }
                text x=(LEFT - 4.0) y=(TOP + plot_height) text-anchor="end" font-size="11" fill="#1b1f24" { "0" }
                @for r in &rects {
                    rect x=(fmt(r.x)) y=(fmt(r.y)) width=(fmt(bar)) height=(fmt(r.height)) fill=(colour(r.series)) {
                        title { (r.title) }
                    }
                }
                @for (i, label) in labels.iter().enumerate() {
                    @if i % label_every == 0 || i + 1 == labels.len() {
                        text x=(fmt(LEFT + slot * i as f64 + slot / 2.0)) y=(HEIGHT - 6.0) text-anchor="middle" font-size="11" fill="#1b1f24" { (label) }
                    }
                }
            }
            figcaption {
                strong { (title) }
                @if series.len() > 1 || series.first().is_some_and(|s| !s.name.is_empty()) {
                    ul.legend {
                        @for (s, serie) in series.iter().enumerate() {
                            li {
                                svg width="12" height="12" viewBox="0 0 12 12" aria-hidden="true" { rect width="12" height="12" fill=(colour(s)) {} }
                                " " (serie.name)
                            }
                        }
                    }
                }
            }
            details {
                summary { "Data" }
                table {
                    thead { tr {
                        th scope="col" { "Bar" }
                        @for serie in series { th scope="col" { (if serie.name.is_empty() { "Count" } else { serie.name.as_str() }) } }
                    } }
                    tbody { @for (i, label) in labels.iter().enumerate() {
                        @if totals[i] > 0 || labels.len() <= 12 {
                            tr {
                                th scope="row" { (label) }
                                @for serie in series { td { (serie.values.get(i).copied().unwrap_or(0)) } }
                            }
                        }
                    } }
                }
            }
        }
    }
}

struct Rect {
    x: f64,
    y: f64,
    height: f64,
    series: usize,
    title: String,
}

fn fmt(v: f64) -> String {
    format!("{v:.1}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_stack_and_scale_to_the_largest_total() {
        let labels: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let series = vec![
            Series { name: "VALID".into(), values: vec![3, 0] },
            Series { name: "EXPIRED".into(), values: vec![1, 2] },
        ];
        let svg = stacked_bars("c", "Validations", &labels, &series).into_string();
        // Bar a: VALID from 0 to 3 and EXPIRED from 3 to 4 (the tallest: the whole plot height).
        let plot = HEIGHT - BOTTOM - TOP;
        assert!(svg.contains(&format!("y=\"{}\"", fmt(TOP))), "the tallest bar reaches the top: {svg}");
        assert!(svg.contains(&format!("height=\"{}\"", fmt(plot * 3.0 / 4.0))), "{svg}");
        assert!(svg.contains("<title>a, EXPIRED: 1</title>") && svg.contains("<title>b, EXPIRED: 2</title>"));
        assert!(!svg.contains("b, VALID"), "an empty segment is not drawn");
        assert!(svg.contains("Validations: 6 in total, at most 4 in one bar"));
        assert!(!svg.contains("style="), "no inline style (the CSP)");
    }

    #[test]
    fn names_are_escaped() {
        let series = vec![Series { name: "<b>".into(), values: vec![1] }];
        let svg = stacked_bars("x", "t", &["<i>".to_owned()], &series).into_string();
        assert!(!svg.contains("<b>") && !svg.contains("<i>") && svg.contains("&lt;b&gt;"));
    }
}
