//go:build !linux

package capture

import (
	"errors"
	"fmt"
)

// OpenLive is only available on Linux (AF_PACKET).
func OpenLive(iface string, opts LiveOptions) (Source, error) {
	return nil, fmt.Errorf("open live %s: %w", iface, errors.ErrUnsupported)
}
