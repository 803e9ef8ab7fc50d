package intercept

import (
	"bytes"
	"encoding/json"
	"testing"
)

// Extras are top-level members written between the summary and the totals,
// in order; the rest of the report is unchanged.
func TestReportExtras(t *testing.T) {
	r := New(Options{})
	var plain, extra bytes.Buffer
	if err := r.Report(nil).WriteJSON(&plain); err != nil {
		t.Fatal(err)
	}
	rep := r.Report(nil)
	rep.Extras = []Extra{{Name: "agents", Value: map[string]int{"accepted": 2}}, {Name: "more", Value: []string{"x"}}}
	if err := rep.WriteJSON(&extra); err != nil {
		t.Fatal(err)
	}
	var v map[string]json.RawMessage
	if err := json.Unmarshal(extra.Bytes(), &v); err != nil {
		t.Fatalf("%v\n%s", err, extra.String())
	}
	if string(v["agents"]) != `{"accepted":2}` || string(v["more"]) != `["x"]` || v["totals"] == nil || v["sessions"] == nil {
		t.Errorf("members %v", v)
	}
	without := bytes.Replace(extra.Bytes(), []byte("  \"agents\": {\"accepted\":2},\n  \"more\": [\"x\"],\n"), nil, 1)
	if !bytes.Equal(without, plain.Bytes()) {
		t.Errorf("with the extras taken out the report differs:\n%s\nwant\n%s", without, plain.String())
	}
}
