package backend

// External is a server lem does not launch: it only attaches to Endpoint.
const External = "external"

func init() {
	register(&Plugin{Kind: External, Order: 1000, Aliases: []string{"openai", "attach"}})
}
