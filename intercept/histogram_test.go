package intercept

import (
	"math"
	"testing"
)

// TestLatHistBuckets: the histogram the HTML report plots agrees with the
// percentiles the JSON report gives: the buckets count every value, in
// increasing order, the last one ends at the maximum, and the p50 is the
// upper bound of the bucket where half the values are reached.
func TestLatHistBuckets(t *testing.T) {
	var h latHist
	if b := h.buckets(); b != nil {
		t.Errorf("empty histogram: buckets %v", b)
	}
	vals := []int64{0, 900, 1000, 1000, 55_000, 56_000, 1_200_000, 1_250_000, 1_300_000, 98_000_000}
	for _, v := range vals {
		h.add(v)
	}
	st := h.stats(&latHist{})
	var sum int64
	prev := -1.0
	for _, b := range st.Histogram {
		if b.UpperUS <= prev || b.Count <= 0 {
			t.Errorf("bucket %+v after upper %v", b, prev)
		}
		prev = b.UpperUS
		sum += b.Count
	}
	if sum != int64(len(vals)) || st.Count != sum {
		t.Errorf("buckets count %d, stats %d; want %d", sum, st.Count, len(vals))
	}
	if last := st.Histogram[len(st.Histogram)-1].UpperUS; last != st.MaxUS || last != 98_000 {
		t.Errorf("last bucket ends at %v µs, max %v µs; want 98000", last, st.MaxUS)
	}
	var cum int64
	for _, b := range st.Histogram {
		cum += b.Count
		if float64(cum) >= math.Ceil(0.5*float64(len(vals))) {
			if b.UpperUS != st.P50US {
				t.Errorf("p50 %v µs, but half the values are reached in the bucket ending at %v µs", st.P50US, b.UpperUS)
			}
			break
		}
	}
}
