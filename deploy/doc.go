// Package deploy holds deployment assets (Grafana provisioning and
// dashboards; compose files and manifests as they arrive) and the tests
// that check them: dashboards' queries run against a real ClickHouse.
package deploy
