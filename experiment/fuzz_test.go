package experiment

import "testing"

// Any experiment file: a decoding error or a configuration that
// normalises and validates without panicking.
func FuzzParse(f *testing.F) {
	f.Add([]byte("backend: {kind: vllm, model: m, precision: bfloat16}\nworkload: {requests: 10, arrival: {concurrency: 4}}\n"))
	f.Add([]byte("sweep:\n  - name: a\n    workload: {arrival: {rate: 3}}\nmeasurement: {cycles: 2, baseline: 1s}\n"))
	f.Add([]byte("backend: {kind: pytorch, quantization: {enabled: true}, parallelism: {tensor: 2, devices: [0]}}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			return
		}
		c.Normalize()
		_ = c.Validate()
		if _, err := c.Runs(); err != nil {
			return
		}
	})
}
