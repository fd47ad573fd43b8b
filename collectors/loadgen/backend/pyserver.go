package backend

import _ "embed"

// PyServer is lem's reference PyTorch/transformers server (pyserver/server.py),
// written next to a run and started with python3 for backend kind pytorch.
//
//go:embed pyserver/server.py
var PyServer []byte
