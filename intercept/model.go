package intercept

// The report's data model for the per-request comparison (issue 10): what
// the JSON report carries beside the per-session rows, and what the HTML
// report is drawn from. The JSON names are a contract: fields are only
// ever added (ReportVersion changes if that promise breaks).
//
// In the report:
//
//	{"version": 1,
//	 "summary": {..., "requests": RequestTotals, "response_time": ResponseTime},
//	 "totals": {...},
//	 "routes": [RouteReport, ...],
//	 "regressions": [Regression, ...],
//	 "sessions": [...]}

// Reference names what the target's answers are compared with.
const (
	// AgainstBaseline: a second target, the known-good build
	// (--baseline), replayed in the same run.
	AgainstBaseline = "baseline"
	// AgainstCaptured: the captured server's answers.
	AgainstCaptured = "captured"
)

// RequestTotals count the requests of the replayed sessions (their copies
// to --target) over the run. A request is one HTTP message, one RESP
// command, or, for other protocols, one turn (the client's bytes up to
// the next answer).
type RequestTotals struct {
	// Against is AgainstBaseline or AgainstCaptured.
	Against string `json:"against"`
	// Requests counts every request whose answer was compared.
	Requests int64 `json:"requests"`
	// Same: the answer equals the reference's after the rules (--ignore,
	// the volatile HTTP headers).
	Same int64 `json:"same"`
	// Noise: the answer differs from the reference only in fields that
	// also differ between the baseline and the capture, or between two
	// baseline answers of the same request (learned per route).
	Noise int64 `json:"noise"`
	// Regressions: the answer differs from the reference in a field that
	// is not noise. Against the capture (no baseline) nothing is learned
	// as noise: these are the answers that differ from the capture after
	// the rules.
	Regressions int64 `json:"regressions"`
	// NotCompared counts requests without a verdict: one side sent no
	// answer for it, it came after a hole or past --response-limit, or
	// the session was cut short.
	NotCompared int64 `json:"not_compared"`
}

// Percentiles of a latency distribution, in microseconds.
type Percentiles struct {
	P50US float64 `json:"p50_us"`
	P90US float64 `json:"p90_us"`
	P99US float64 `json:"p99_us"`
	MaxUS float64 `json:"max_us"`
}

// LatencyStats describe the response times of one side (captured,
// replayed, baseline) over a set of requests. A response time is measured
// from the request's last byte (its write, or its capture time) to the
// answer's last byte; FirstByte is the same to the answer's first byte.
type LatencyStats struct {
	Count int64 `json:"count"`
	Percentiles
	FirstByte Percentiles `json:"first_byte"`
	// Histogram is the distribution of the response times to the last
	// byte, for plots (the HTML report): its non-empty buckets in
	// increasing order. It is not part of the JSON report.
	Histogram []LatencyBucket `json:"-"`
}

// LatencyBucket is one bucket of a latency histogram: Count response
// times of at most UpperUS microseconds (and above the previous bucket's).
type LatencyBucket struct {
	UpperUS float64
	Count   int64
}

// LatencyRatio compares the target's response times with the
// reference's: Replayed's percentile over the reference's (0 when either
// side has no measurement).
type LatencyRatio struct {
	// Against is AgainstBaseline when a baseline ran, else
	// AgainstCaptured.
	Against string  `json:"against"`
	P50     float64 `json:"p50"`
	P90     float64 `json:"p90"`
	P99     float64 `json:"p99"`
}

// ResponseTime puts the three sides' response times side by side: the
// captured server's (from the capture's timestamps), the target's
// (replayed) and the baseline's (count 0 without --baseline).
type ResponseTime struct {
	Captured LatencyStats `json:"captured"`
	Replayed LatencyStats `json:"replayed"`
	Baseline LatencyStats `json:"baseline"`
	Ratio    LatencyRatio `json:"ratio"`
}

// RouteReport is one route: a kind of request. HTTP routes are the method
// and the path with ids folded ("GET /api/items/{n}"), RESP routes the
// command name ("GET", "HSET"), other protocols the turn's number in its
// session ("turn 3").
type RouteReport struct {
	Route    string `json:"route"`
	Protocol string `json:"protocol"`
	// Requests, Same, Noise, Regressions and NotCompared count as
	// RequestTotals do, for this route.
	Requests    int64 `json:"requests"`
	Same        int64 `json:"same"`
	Noise       int64 `json:"noise"`
	Regressions int64 `json:"regressions"`
	NotCompared int64 `json:"not_compared"`
	// NoiseFields are the fields learned as noise for this route (array
	// indices folded: "body $.items[*].id").
	NoiseFields  []string     `json:"noise_fields,omitempty"`
	ResponseTime ResponseTime `json:"response_time"`
}

// FieldDiff is one difference between two answers, in the decoded form:
// an HTTP status, a header, a JSON field of the body (a JSON path), a body
// that is not JSON (at the first differing byte), a RESP reply element, or
// a turn's bytes. Values are shown readably: printable text as is, other
// bytes escaped (\x00, \r, \n), cut at a bounded length ("…").
type FieldDiff struct {
	// Field names it: "status", "header content-type",
	// "body $.user.name", "body", "reply[2]", "bytes".
	Field string `json:"field"`
	// Offset is the byte offset of the first difference within a body or
	// byte field (-1 for fields compared whole: status, header, JSON
	// value).
	Offset int64 `json:"offset"`
	// Reference is the reference's value (the baseline's, else the
	// capture's), Replayed the target's; Missing marks a field one side
	// does not have at all.
	Reference string `json:"reference"`
	Replayed  string `json:"replayed"`
	Missing   string `json:"missing,omitempty"` // "reference", "replayed" or ""
}

// Answer is one side's answer to a request, for display: its text
// (decoded: chunked framing removed, gzip/deflate inflated; HTTP headers
// one per line; the rest escaped where not printable — \xNN, and \r
// named — with its newlines and tabs kept), cut at a bounded length, and
// its timing.
type Answer struct {
	Text      string `json:"text"`
	Truncated bool   `json:"truncated,omitempty"`
	// FirstByteUS and LastByteUS are the response time to the answer's
	// first and last byte, in microseconds (-1: not measured).
	FirstByteUS float64 `json:"first_byte_us"`
	LastByteUS  float64 `json:"last_byte_us"`
}

// Regression is one request whose answer from the target differs from the
// reference's in a field that is not noise: both answers, and what
// differs (noise fields left out). The report keeps a bounded number of
// them (the first few per route).
type Regression struct {
	Route string `json:"route"`
	// Session is the session's start number as in the rows ("start_id":
	// known when the request is, unlike "id"), Pass and Copy as there;
	// Request numbers the request within the session from 0.
	Session uint64 `json:"session"`
	Pass    int    `json:"pass"`
	Copy    int    `json:"copy"`
	Request int    `json:"request"`
	// RequestText is the request as the client sent it (readable, cut).
	RequestText string `json:"request_text"`
	// Against is AgainstBaseline or AgainstCaptured: what Reference is.
	Against     string      `json:"against"`
	Differences []FieldDiff `json:"differences"`
	Replayed    Answer      `json:"replayed"`
	Reference   Answer      `json:"reference"`
	// Captured is the captured answer when the reference is the baseline
	// (nil otherwise: then it is Reference).
	Captured *Answer `json:"captured,omitempty"`
}
