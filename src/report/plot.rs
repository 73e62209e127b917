//! The `--plot` pictures, drawn with plotters' SVG backend into a string. Pure: no I/O (the
//! commands stage the string through `write::Batch`) and no font files: without plotters' `ttf`
//! feature, text sizes are estimated and text is written as SVG `<text>` elements that the viewer
//! renders with its own fonts.
//!
//! (Over 400 lines because plotters' chart builders are verbose: three panel drawers of 70 to 80
//! lines each; the tests are 60.)

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 480;
const FONT: &str = "sans-serif";
/// Histogram bins of the row-norm picture.
const BINS: usize = 40;

/// Series colours, in the order groups are given (colour-blind-safe Okabe-Ito hues).
const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(0, 158, 115),
    RGBColor(86, 180, 233),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(213, 94, 0),
    RGBColor(120, 120, 120),
];

/// The rows of one method and their L2 norms.
pub struct NormGroup {
    pub method: String,
    /// Whether the rows were copied from the source (exact, normalized, ...).
    pub copied: bool,
    pub norms: Vec<f32>,
}

/// What the transplant picture shows.
pub struct NormPlot {
    /// The output file the rows were written to.
    pub output: String,
    /// The source model.
    pub source: String,
    pub calibrate_norm: bool,
    /// Methods in display order; groups without rows are left out of the picture.
    pub groups: Vec<NormGroup>,
    pub median_copied: Option<f32>,
}

/// One epoch of the fine-tuning picture.
pub struct EpochPoint {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub valid_loss: Option<f64>,
    pub valid_accuracy: Option<f64>,
}

/// What the fine-tuning picture shows.
pub struct CurvePlot {
    /// The fine-tuned embedding file.
    pub output: String,
    pub train: String,
    pub valid: Option<String>,
    pub epochs: Vec<EpochPoint>,
    /// The epoch whose weights were kept.
    pub kept_epoch: usize,
}

type DrawResult<T> = Result<T, String>;

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("drawing the picture: {e:?}")
}

/// The transplant picture: on the left, the distribution of row norms per method (share of that
/// method's rows per bin, so small groups stay visible next to large ones) with the copied rows'
/// median marked; on the right, each method's share of all rows as a bar.
pub fn row_norms_svg(p: &NormPlot) -> DrawResult<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let title = format!(
            "Row norms of {} (from {}{})",
            p.output,
            p.source,
            if p.calibrate_norm {
                ", --calibrate-norm"
            } else {
                ""
            }
        );
        let root = root.titled(&title, (FONT, 20)).map_err(err)?;
        let (left, right) = root.split_horizontally(620);
        let groups: Vec<(usize, &NormGroup)> = p
            .groups
            .iter()
            .filter(|g| !g.norms.is_empty())
            .enumerate()
            .collect();
        norm_histogram(&left, &groups, p.median_copied)?;
        coverage_bars(&right, &groups)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

fn norm_histogram(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    groups: &[(usize, &NormGroup)],
    median_copied: Option<f32>,
) -> DrawResult<()> {
    let finite = || {
        groups
            .iter()
            .flat_map(|(_, g)| g.norms.iter().copied())
            .filter(|v| v.is_finite())
    };
    let top = finite()
        .fold(0f32, f32::max)
        .max(median_copied.unwrap_or(0.0));
    let top = if top > 0.0 { top * 1.05 } else { 1.0 };
    let width = top / BINS as f32;
    let shares: Vec<Vec<f32>> = groups
        .iter()
        .map(|(_, g)| {
            let mut counts = vec![0usize; BINS];
            for v in g.norms.iter().filter(|v| v.is_finite()) {
                counts[((v / width) as usize).min(BINS - 1)] += 1;
            }
            let n = g.norms.len().max(1) as f32;
            counts.iter().map(|&c| 100.0 * c as f32 / n).collect()
        })
        .collect();
    let peak = shares.iter().flatten().fold(0f32, |a, &b| a.max(b));
    let ymax = (peak * 1.1).clamp(1.0, 100.0);
    let mut chart = ChartBuilder::on(area)
        .caption("L2 norm of each output row, by method", (FONT, 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0f32..top, 0f32..ymax)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("row L2 norm")
        .y_desc("% of the method's rows per bin")
        .light_line_style(WHITE)
        .draw()
        .map_err(err)?;
    for ((i, g), share) in groups.iter().zip(&shares) {
        let color = PALETTE[i % PALETTE.len()];
        // A step line: flat across each bin.
        let points = share
            .iter()
            .enumerate()
            .flat_map(|(b, &s)| [(b as f32 * width, s), ((b + 1) as f32 * width, s)]);
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(err)?
            .label(format!("{} ({} rows)", g.method, g.norms.len()))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], color.filled()));
    }
    if let Some(m) = median_copied.filter(|m| m.is_finite()) {
        chart
            .draw_series(DashedLineSeries::new(
                [(m, 0.0), (m, ymax)],
                6,
                4,
                BLACK.stroke_width(1),
            ))
            .map_err(err)?
            .label(format!("median of copied rows: {m:.4}"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 13))
        .draw()
        .map_err(err)?;
    Ok(())
}

fn coverage_bars(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    groups: &[(usize, &NormGroup)],
) -> DrawResult<()> {
    let total: usize = groups.iter().map(|(_, g)| g.norms.len()).sum();
    let copied: usize = groups
        .iter()
        .filter(|(_, g)| g.copied)
        .map(|(_, g)| g.norms.len())
        .sum();
    let pct = |n: usize| 100.0 * n as f64 / total.max(1) as f64;
    let n = groups.len().max(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("Rows per method: {:.1}% copied", pct(copied)),
            (FONT, 16),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(8)
        .build_cartesian_2d(0f64..100f64, 0f64..n)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(format!("% of all {total} rows"))
        .disable_y_axis()
        .disable_y_mesh()
        .light_line_style(WHITE)
        .draw()
        .map_err(err)?;
    // The first method at the top.
    let y = |k: usize| n - 1.0 - k as f64;
    chart
        .draw_series(groups.iter().enumerate().map(|(k, (i, g))| {
            let color = PALETTE[i % PALETTE.len()];
            Rectangle::new(
                [(0.0, y(k) + 0.2), (pct(g.norms.len()), y(k) + 0.8)],
                color.filled(),
            )
        }))
        .map_err(err)?;
    chart
        .draw_series(groups.iter().enumerate().map(|(k, (i, g))| {
            let x = pct(g.norms.len());
            let label = format!("{} {} ({:.1}%)", g.method, g.norms.len(), x);
            // Inside the bar's end when there is room (black or white, whichever reads on the
            // bar's colour); after it otherwise.
            let RGBColor(r, gr, b) = PALETTE[i % PALETTE.len()];
            let light = 0.299 * r as f64 + 0.587 * gr as f64 + 0.114 * b as f64 > 140.0;
            let (x, anchor, colour) = if x > 55.0 {
                let ink = if light { &BLACK } else { &WHITE };
                (x - 1.0, Pos::new(HPos::Right, VPos::Center), ink)
            } else {
                (x + 1.0, Pos::new(HPos::Left, VPos::Center), &BLACK)
            };
            Text::new(
                label,
                (x, y(k) + 0.5),
                TextStyle::from((FONT, 13).into_font())
                    .pos(anchor)
                    .color(colour),
            )
        }))
        .map_err(err)?;
    Ok(())
}

/// The fine-tuning picture: loss (left) and accuracy (right) per epoch, training and (with a
/// validation set) validation, the kept epoch marked by a dashed line in both.
pub fn curves_svg(p: &CurvePlot) -> DrawResult<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let title = match &p.valid {
            Some(v) => format!("Fine-tuning {} (train {}, valid {})", p.output, p.train, v),
            None => format!("Fine-tuning {} (train {})", p.output, p.train),
        };
        let root = root.titled(&title, (FONT, 20)).map_err(err)?;
        let (left, right) = root.split_horizontally(WIDTH / 2);
        let loss = |e: &EpochPoint| (e.train_loss, e.valid_loss);
        let acc = |e: &EpochPoint| {
            (
                100.0 * e.train_accuracy,
                e.valid_accuracy.map(|a| 100.0 * a),
            )
        };
        let top_loss = p
            .epochs
            .iter()
            .flat_map(|e| [Some(e.train_loss), e.valid_loss])
            .flatten()
            .filter(|v| v.is_finite())
            .fold(0f64, f64::max);
        let top_loss = if top_loss > 0.0 { top_loss * 1.1 } else { 1.0 };
        curve_panel(
            &left,
            p,
            "Loss per epoch",
            "cross-entropy loss",
            top_loss,
            &loss,
        )?;
        curve_panel(&right, p, "Accuracy per epoch", "accuracy (%)", 100.0, &acc)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

fn curve_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    p: &CurvePlot,
    caption: &str,
    y_desc: &str,
    ymax: f64,
    value: &dyn Fn(&EpochPoint) -> (f64, Option<f64>),
) -> DrawResult<()> {
    let last = p.epochs.iter().map(|e| e.epoch).max().unwrap_or(1).max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0.5f64..last as f64 + 0.5, 0f64..ymax)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_desc)
        .x_labels(last.min(12) + 1)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .light_line_style(WHITE)
        .draw()
        .map_err(err)?;
    let train: Vec<(f64, f64)> = p
        .epochs
        .iter()
        .map(|e| (e.epoch as f64, value(e).0))
        .filter(|(_, v)| v.is_finite())
        .collect();
    let valid: Vec<(f64, f64)> = p
        .epochs
        .iter()
        .filter_map(|e| value(e).1.map(|v| (e.epoch as f64, v)))
        .filter(|(_, v)| v.is_finite())
        .collect();
    let series = [
        ("training", PALETTE[0], train),
        ("validation", PALETTE[5], valid),
    ];
    for (name, color, points) in series.into_iter().filter(|s| !s.2.is_empty()) {
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], color.filled()));
        chart
            .draw_series(
                points
                    .iter()
                    .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
            )
            .map_err(err)?;
    }
    let kept = p.kept_epoch as f64;
    chart
        .draw_series(DashedLineSeries::new(
            [(kept, 0.0), (kept, ymax)],
            6,
            4,
            BLACK.stroke_width(1),
        ))
        .map_err(err)?
        .label(format!("kept epoch {}", p.kept_epoch))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 13))
        .draw()
        .map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norm_picture_names_its_file_and_methods() {
        let svg = row_norms_svg(&NormPlot {
            output: "out.safetensors".into(),
            source: "model".into(),
            calibrate_norm: false,
            groups: vec![
                NormGroup {
                    method: "exact".into(),
                    copied: true,
                    norms: vec![1.0, 1.5, 2.0],
                },
                NormGroup {
                    method: "composed".into(),
                    copied: false,
                    norms: vec![],
                },
                NormGroup {
                    method: "random".into(),
                    copied: false,
                    norms: vec![0.5, f32::NAN],
                },
            ],
            median_copied: Some(1.5),
        })
        .unwrap();
        assert!(svg.contains("Row norms of out.safetensors (from model)"));
        assert!(svg.contains("exact (3 rows)"));
        assert!(svg.contains("random 2 (40.0%)"));
        // An empty group is left out.
        assert!(!svg.contains("composed"));
        assert!(svg.contains("median of copied rows: 1.5000"));
    }

    #[test]
    fn curve_picture_without_validation() {
        let svg = curves_svg(&CurvePlot {
            output: "ft.safetensors".into(),
            train: "train.tsv".into(),
            valid: None,
            epochs: (1..=3)
                .map(|e| EpochPoint {
                    epoch: e,
                    train_loss: 1.0 / e as f64,
                    train_accuracy: 0.5,
                    valid_loss: None,
                    valid_accuracy: None,
                })
                .collect(),
            kept_epoch: 3,
        })
        .unwrap();
        assert!(svg.contains("Fine-tuning ft.safetensors (train train.tsv)"));
        assert!(svg.contains("kept epoch 3"));
        assert!(!svg.contains("validation"));
    }
}
