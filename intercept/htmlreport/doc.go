// Package htmlreport renders the end-of-run report (intercept.Report) as one
// self-contained HTML page (--html): the summary, the latency distributions
// of the target, the baseline and the capture as plots, a table of routes
// with their counts and percentiles, and each regressed request with both
// answers side by side and the differences marked.
//
// The page needs nothing beside itself: the CSS is inline, the plots are
// SVG drawn here (no script library, no font, no network), and a few lines
// of inline script only show and hide the per-route plots. Everything taken
// from the report goes through html/template, so a hostile answer, route or
// request is shown as text, never interpreted; answers that are mostly
// binary are shown as hex.
//
// It owns the page's layout and its data (page.go), the plots (plot.go) and
// the marking of differences (mark.go). It must not know how the report was
// made: it reads an intercept.Report, as the JSON report does, and nothing
// else of intercept. Its size is bounded whatever the run: at most
// maxRoutePlots per-route plots and maxRegressions regressed requests are
// drawn (intercept already bounds both answers of each).
//
// Write is safe for concurrent use with different writers; it does not
// keep the report.
package htmlreport
