//! Line charts of the harness's scaling curves, as SVG (plotters' SVG
//! backend: text is left to the viewer's fonts, so no font files are needed
//! to draw them).

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use std::path::Path;

/// One line of a chart: a server's values against the swept parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The legend, e.g. `signalbox`.
    pub name: String,
    /// (x, y) points, in any order (drawn sorted by x).
    pub points: Vec<(f64, f64)>,
    /// Index into the palette, so that one server keeps its colour across
    /// charts.
    pub color: usize,
}

/// A chart of several series against one parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// The title above the plot.
    pub title: String,
    /// What x is, e.g. `idle connections`.
    pub x_label: String,
    /// What y is, e.g. `server RSS per connection (bytes)`.
    pub y_label: String,
    /// A logarithmic x axis (for sweeps over decades).
    pub log_x: bool,
    /// The lines.
    pub series: Vec<Series>,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

impl Chart {
    /// The chart as an SVG document; an error if no series has a point.
    pub fn to_svg(&self) -> Result<String> {
        let points = || self.series.iter().flat_map(|s| s.points.iter());
        let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0.0f64);
        for &(x, y) in points() {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
        if x0 > x1 {
            return Err(anyhow!("{}: no points to draw", self.title));
        }
        if x0 == x1 {
            x0 *= 0.9;
            x1 *= 1.1;
        }
        let y1 = if y1 > 0.0 { y1 * 1.1 } else { 1.0 };
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (720, 420)).into_drawing_area();
            root.fill(&WHITE).map_err(plot_error)?;
            let mut builder = ChartBuilder::on(&root);
            builder
                .caption(&self.title, ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(44)
                .y_label_area_size(72);
            if self.log_x {
                let x0 = x0.max(f64::MIN_POSITIVE);
                let mut chart = builder
                    .build_cartesian_2d((x0..x1).log_scale(), 0.0..y1)
                    .map_err(plot_error)?;
                chart
                    .configure_mesh()
                    .x_desc(&self.x_label)
                    .y_desc(&self.y_label)
                    .x_label_formatter(&|x| short(*x))
                    .y_label_formatter(&|y| short(*y))
                    .draw()
                    .map_err(plot_error)?;
                self.draw_series(&mut chart)?;
            } else {
                let mut chart = builder
                    .build_cartesian_2d(x0..x1, 0.0..y1)
                    .map_err(plot_error)?;
                chart
                    .configure_mesh()
                    .x_desc(&self.x_label)
                    .y_desc(&self.y_label)
                    .x_label_formatter(&|x| short(*x))
                    .y_label_formatter(&|y| short(*y))
                    .draw()
                    .map_err(plot_error)?;
                self.draw_series(&mut chart)?;
            }
            root.present().map_err(plot_error)?;
        }
        Ok(svg)
    }

    fn draw_series<'a, X>(
        &self,
        chart: &mut ChartContext<
            'a,
            SVGBackend<'a>,
            Cartesian2d<X, plotters::coord::types::RangedCoordf64>,
        >,
    ) -> Result<()>
    where
        X: Ranged<ValueType = f64>,
    {
        for series in &self.series {
            let color = COLORS[series.color % COLORS.len()];
            let mut points = series.points.clone();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(plot_error)?
                .label(series.name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
                )
                .map_err(plot_error)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(plot_error)?;
        Ok(())
    }

    /// Writes the chart's SVG to `path`.
    pub fn write_svg(&self, path: &Path) -> Result<()> {
        let svg = self.to_svg()?;
        std::fs::write(path, svg).map_err(|e| anyhow!("writing {}: {e}", path.display()))
    }
}

fn plot_error<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing a chart: {e:?}")
}

/// 1200 → `1.2k`, 3500000 → `3.5M`, 0.25 → `0.25`.
pub fn short(v: f64) -> String {
    let a = v.abs();
    let (n, suffix) = if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let text = if n.fract().abs() < 1e-9 || n.abs() >= 10.0 {
        format!("{n:.0}")
    } else {
        format!("{n:.1}")
    };
    format!("{text}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(log_x: bool) -> Chart {
        Chart {
            title: "fan-out".into(),
            x_label: "subscribers".into(),
            y_label: "deliveries/s".into(),
            log_x,
            series: vec![
                Series {
                    name: "signalbox".into(),
                    color: 0,
                    points: vec![
                        (1000.0, 300_000.0),
                        (100.0, 250_000.0),
                        (10_000.0, 270_000.0),
                    ],
                },
                Series {
                    name: "chat floor".into(),
                    color: 3,
                    points: vec![(100.0, 260_000.0), (1000.0, 310_000.0)],
                },
            ],
        }
    }

    #[test]
    fn a_chart_draws_every_series_with_its_legend() {
        for log_x in [false, true] {
            let svg = chart(log_x).to_svg().unwrap();
            assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
            assert!(svg.contains("signalbox") && svg.contains("chat floor"));
            assert!(svg.contains("subscribers") && svg.contains("deliveries/s"));
            // Five points in all, one circle each.
            assert_eq!(svg.matches("<circle").count(), 5, "log_x={log_x}");
        }
    }

    #[test]
    fn a_chart_without_points_is_an_error() {
        let mut empty = chart(false);
        for s in &mut empty.series {
            s.points.clear();
        }
        assert!(empty.to_svg().is_err());
    }

    #[test]
    fn short_numbers() {
        assert_eq!(short(1200.0), "1.2k");
        assert_eq!(short(10_000.0), "10k");
        assert_eq!(short(3_500_000.0), "3.5M");
        assert_eq!(short(0.5), "0.5");
        assert_eq!(short(20.0), "20");
    }
}
