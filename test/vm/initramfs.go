package vm

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// cpioWriter writes a "newc" cpio archive, the format the kernel unpacks as initramfs.
type cpioWriter struct {
	w   *bufio.Writer
	ino int
	err error
}

func (c *cpioWriter) header(name string, mode uint32, size int, rdevMajor, rdevMinor uint32) {
	if c.err != nil {
		return
	}
	c.ino++
	nlink := 1
	if mode&unix.S_IFMT == unix.S_IFDIR {
		nlink = 2
	}
	_, c.err = fmt.Fprintf(c.w, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, size, 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	if c.err == nil {
		_, c.err = io.WriteString(c.w, name+"\x00")
	}
	c.pad(110 + len(name) + 1)
}

func (c *cpioWriter) pad(n int) {
	if c.err == nil && n%4 != 0 {
		_, c.err = c.w.Write(make([]byte, 4-n%4))
	}
}

func (c *cpioWriter) dir(name string) { c.header(name, unix.S_IFDIR|0o755, 0, 0, 0) }

func (c *cpioWriter) charDev(name string, major, minor uint32) {
	c.header(name, unix.S_IFCHR|0o600, 0, major, minor)
}

func (c *cpioWriter) file(name string, mode uint32, data []byte) {
	c.header(name, unix.S_IFREG|mode, len(data), 0, 0)
	if c.err == nil {
		_, c.err = c.w.Write(data)
	}
	c.pad(len(data))
}

func (c *cpioWriter) close() error {
	c.header("TRAILER!!!", 0, 0, 0, 0)
	if c.err != nil {
		return c.err
	}
	return c.w.Flush()
}

// initramfsModules is where the boot modules are in the initramfs, with their load order in
// initramfsModules/order.
const initramfsModules = "modules"

// WriteInitramfs writes an initramfs to out holding init as /init, /dev/console, and the
// boot modules (with their dependencies) taken from mods, in load order.
func WriteInitramfs(out, init string, mods *Modules) error {
	order, err := mods.Order(BootModules...)
	if err != nil {
		return err
	}
	initData, err := os.ReadFile(init)
	if err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	c := &cpioWriter{w: bufio.NewWriterSize(f, 1<<20)}
	for _, d := range []string{"dev", "proc", "sys", "mnt", initramfsModules} {
		c.dir(d)
	}
	c.charDev("dev/console", 5, 1)
	c.file("init", 0o755, initData)
	var names []string
	for _, p := range order {
		data, err := os.ReadFile(filepath.Join(mods.Dir, p))
		if err != nil {
			return err
		}
		name := filepath.Base(p)
		names = append(names, name)
		c.file(initramfsModules+"/"+name, 0o644, data)
	}
	c.file(initramfsModules+"/order", 0o644, []byte(strings.Join(names, "\n")+"\n"))
	if err := c.close(); err != nil {
		return fmt.Errorf("writing initramfs %s: %w", out, err)
	}
	return f.Close()
}
