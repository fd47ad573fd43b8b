// Package exporters writes measured data as datasets for publication; each
// format has its own folder (hfdataset/ so far).
package exporters
