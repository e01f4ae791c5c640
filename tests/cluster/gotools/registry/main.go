// The CNCF distribution registry with the one storage driver the local cluster's registry uses
// (filesystem: registry.config_yaml) and the htpasswd access controller (the second instance that asks
// for a login: registry.authenticated_registry). Upstream's cmd/registry also links the Azure, GCS and
// S3 drivers and their SDKs, and the CloudFront middleware: its cold build took 173 s of the install
// (CI, 2026-12-03).
package main

import (
	"github.com/distribution/distribution/v3/registry"
	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
)

func main() {
	// As upstream's main: its two commands exit non-zero themselves when they fail.
	_ = registry.RootCmd.Execute()
}
