package filesource

import (
	"os"
	"syscall"
)

// sysID returns the device, inode and status-change time of fi.
func sysID(fi os.FileInfo) (dev, ino uint64, ctimeNano int64) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, 0
	}
	// The field types differ between architectures.
	return uint64(st.Dev), uint64(st.Ino), int64(st.Ctimespec.Sec)*1e9 + int64(st.Ctimespec.Nsec)
}
