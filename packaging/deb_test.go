package packaging

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/internal/realserver"
	"github.com/relayd/relayd/queue"
)

// buildDeb runs make deb into a temporary directory and returns the .deb.
func buildDeb(t *testing.T) string {
	t.Helper()
	realserver.RequireBinary(t, "scdoc", "scdoc")
	build := t.TempDir()
	mk := exec.Command("make", "-C", "..", "deb", "BUILD="+build, "VERSION=0.0.0~test")
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("make deb: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(build, "*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb made %v", debs)
	}
	return debs[0]
}

// throwawayRoot is a directory dpkg --root installs into: an empty dpkg
// database and the directories a Debian system has before relayd comes.
// The maintainer scripts run outside it (--force-script-chrootless, with
// $DPKG_ROOT set), with the host's systemd-sysusers, systemd-tmpfiles and
// deb-systemd-helper, which is why the package's dependencies are not
// looked for in the root (--force-depends).
type throwawayRoot struct {
	t    *testing.T
	dpkg string
	dir  string
	// before is what the root held before the package came.
	before []string
}

func newThrowawayRoot(t *testing.T, dpkg string) *throwawayRoot {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "etc/systemd/system", "var/lib/systemd", "run"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "var/lib/dpkg/status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := &throwawayRoot{t: t, dpkg: dpkg, dir: dir}
	r.before = r.list()
	return r
}

// run runs dpkg on the root and returns its output.
func (r *throwawayRoot) run(args ...string) (string, error) {
	args = append([]string{"--root=" + r.dir, "--force-script-chrootless", "--force-not-root", "--force-depends", "--log=/dev/null"}, args...)
	out, err := exec.Command(r.dpkg, args...).CombinedOutput()
	r.t.Logf("dpkg %s:\n%s", strings.Join(args, " "), out)
	return string(out), err
}

func (r *throwawayRoot) path(p string) string { return filepath.Join(r.dir, p) }

// list returns every path in the root but dpkg's own database, sorted.
func (r *throwawayRoot) list() []string {
	var paths []string
	filepath.WalkDir(r.dir, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(r.dir, p)
		if rel == "var/lib/dpkg" {
			return filepath.SkipDir
		}
		if rel != "." {
			paths = append(paths, rel)
		}
		return nil
	})
	slices.Sort(paths)
	return paths
}

// added returns what the root holds beyond what it held before the
// package came.
func (r *throwawayRoot) added() []string {
	var added []string
	for _, p := range r.list() {
		if !slices.Contains(r.before, p) {
			added = append(added, p)
		}
	}
	return added
}

// The user database systemd-sysusers wrote into the root: Debian leaves
// system users behind on purge.
var userDatabase = []string{"etc/.pwd.lock", "etc/group", "etc/gshadow", "etc/passwd", "etc/shadow"}

// make deb builds a package that holds what the units expect, declares
// what its scripts need, passes lintian without a warning, and installs
// into a throwaway root, where its own scripts create the relayd user and
// its directories; a purge leaves only what it says it leaves.
func TestDebPackage(t *testing.T) {
	dpkg := realserver.RequireBinary(t, "dpkg", "dpkg")
	realserver.RequireBinary(t, "systemd-sysusers", "systemd")
	realserver.RequireBinary(t, "deb-systemd-helper", "init-system-helpers")
	deb := buildDeb(t)
	lintian := realserver.RequireBinary(t, "lintian", "lintian")
	if out, err := exec.Command(lintian, "--fail-on", "warning", deb).CombinedOutput(); err != nil {
		t.Errorf("lintian --fail-on warning: %v\n%s", err, out)
	}
	info, _ := exec.Command("dpkg-deb", "-I", deb).CombinedOutput()
	conffiles, _ := exec.Command("dpkg-deb", "--ctrl-tarfile", deb).Output()
	if !strings.Contains(string(info), "Version: 0.0.0~test") || !strings.Contains(string(conffiles), "conffiles") {
		t.Errorf("dpkg-deb -I:\n%s", info)
	}
	for _, dep := range []string{"systemd | systemd-standalone-sysusers | systemd-sysusers", "systemd | systemd-standalone-tmpfiles | systemd-tmpfiles", "ca-certificates"} {
		if !strings.Contains(string(info), dep) {
			t.Errorf("Depends lacks %q:\n%s", dep, info)
		}
	}
	for _, script := range []string{"postinst", "prerm", "postrm"} {
		b, err := exec.Command("dpkg-deb", "-I", deb, script).Output()
		if err != nil {
			t.Fatalf("dpkg-deb -I %s: %v", script, err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "|| true") || strings.Contains(line, "|| :") {
				t.Errorf("%s:%d hides a failure: %s", script, i+1, line)
			}
		}
	}
	listing, _ := exec.Command("dpkg-deb", "-c", deb).CombinedOutput()
	for _, f := range []string{"./usr/bin/relayd", "./usr/sbin/relayd-sendmail -> ../bin/relayd", "./usr/share/man/man8/relayd-sendmail.8.gz -> relayd.8.gz", "./usr/lib/systemd/system/relayd.service", "./usr/lib/systemd/system/relayd-imap.socket",
		"./usr/lib/systemd/system/relayd-smtp.socket", "./usr/lib/sysusers.d/relayd.conf", "./usr/lib/tmpfiles.d/relayd.conf",
		"./etc/relayd/relayd.toml", "./usr/share/man/man8/relayd.8.gz", "./usr/share/man/man5/relayd.toml.5.gz",
		"./usr/share/bash-completion/completions/relayd", "./usr/share/zsh/vendor-completions/_relayd",
		"./usr/share/man/man7/relayd-setup.7.gz", "./usr/share/doc/relayd/README.md.gz", "./usr/share/doc/relayd/examples/relayd.toml",
		"./usr/share/doc/relayd/copyright", "./usr/share/doc/relayd/changelog.gz"} {
		if !strings.Contains(string(listing), " "+f+"\n") {
			t.Errorf("the package lacks %s", f)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("installing needs root: systemd-tmpfiles gives /var/lib/relayd to relayd")
	}

	t.Run("install", func(t *testing.T) {
		r := newThrowawayRoot(t, dpkg)
		if out, err := r.run("-i", deb); err != nil {
			t.Fatalf("dpkg --root -i: %v\n%s", err, out)
		}
		ctrl, _ := os.ReadFile(r.path("var/lib/dpkg/info/relayd.conffiles"))
		if strings.TrimSpace(string(ctrl)) != "/etc/relayd/relayd.toml" {
			t.Errorf("conffiles = %q", ctrl)
		}
		passwd, _ := os.ReadFile(r.path("etc/passwd"))
		if !strings.Contains(string(passwd), "relayd:x:") {
			t.Fatalf("the relayd user was not created:\n%s", passwd)
		}
		fi, err := os.Stat(r.path("var/lib/relayd"))
		if err != nil || fi.Mode().Perm() != 0o700 || fi.Sys().(*syscall.Stat_t).Uid == 0 {
			t.Errorf("/var/lib/relayd: %v %v", fi, err)
		}
		// The key grants are encrypted under: root:relayd 0640, made once.
		key, err := auth.ReadKeyFile(r.path("etc/relayd/relayd.key"))
		if err != nil {
			t.Fatalf("the install made no key: %v", err)
		}
		if fi, err := os.Stat(r.path("etc/relayd/relayd.key")); err != nil || fi.Mode().Perm() != 0o640 ||
			fi.Sys().(*syscall.Stat_t).Uid != 0 || !strings.Contains(string(group(t, r)), fmt.Sprintf("relayd:x:%d:", fi.Sys().(*syscall.Stat_t).Gid)) {
			t.Errorf("/etc/relayd/relayd.key: %v %v, want root:relayd 0640", fi, err)
		}
		if out, err := r.run("-i", deb); err != nil {
			t.Fatalf("dpkg --root -i again: %v\n%s", err, out)
		}
		if again, err := auth.ReadKeyFile(r.path("etc/relayd/relayd.key")); err != nil || again.ID() != key.ID() {
			t.Errorf("reinstalling replaced the key: %v", err)
		}
		if b, err := exec.Command(r.path("usr/bin/relayd"), "--version").Output(); err != nil ||
			!strings.HasPrefix(string(b), "relayd 0.0.0~test (commit ") {
			t.Errorf("installed relayd --version = %q, %v", b, err)
		}
	})

	// An admin enabled the units (systemctl enable), placed a client
	// secret and a key in /etc/relayd, authorized an account, and mail is
	// queued: the purge removes the links, the configuration and the
	// secret, keeps the key (grants remain), and leaves the state
	// directory as it was, saying how many messages are in it.
	t.Run("purge keeps grants, mail and keys", func(t *testing.T) {
		systemctl := realserver.RequireBinary(t, "systemctl", "systemd")
		r := newThrowawayRoot(t, dpkg)
		if out, err := r.run("-i", deb); err != nil {
			t.Fatalf("dpkg --root -i: %v\n%s", err, out)
		}
		if out, err := exec.Command(systemctl, "--root="+r.dir, "enable", "relayd.service", "relayd-imap.socket", "relayd-smtp.socket").CombinedOutput(); err != nil {
			t.Fatalf("systemctl --root enable: %v\n%s", err, out)
		}
		if _, err := os.Lstat(r.path("etc/systemd/system/multi-user.target.wants/relayd.service")); err != nil {
			t.Fatalf("systemctl enable made no link: %v", err)
		}
		for name, content := range map[string]string{"support.secret": "s3cret\n", "relayd.key": "key\n", "relayd.toml.dpkg-old": "old\n"} {
			if err := os.WriteFile(r.path("etc/relayd/"+name), []byte(content), 0o640); err != nil {
				t.Fatal(err)
			}
		}
		state := r.path("var/lib/relayd")
		if err := (&auth.Store{Dir: state}).Save("support", &auth.Grant{RefreshToken: "r", GrantedAt: time.Now()}); err != nil {
			t.Fatalf("storing a grant: %v", err)
		}
		spool, err := queue.OpenSpool(filepath.Join(state, "queue"), nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{"msg1", "msg2", "msg3"} {
			e := &queue.Entry{ID: id, Account: "support", From: "support@example.com", Created: time.Now(), State: queue.StateQueued,
				Recipients: []queue.Recipient{{Addr: "customer@example.net", State: queue.RcptPending}}}
			if err := spool.Put(e, strings.NewReader("Subject: ticket\r\n\r\nhello\r\n")); err != nil {
				t.Fatal(err)
			}
		}
		spool.Close()
		var stateFiles []string
		for _, p := range r.list() {
			if strings.HasPrefix(p, "var/lib/relayd") {
				stateFiles = append(stateFiles, p)
			}
		}

		out, err := r.run("--purge", "relayd")
		if err != nil {
			t.Fatalf("dpkg --purge: %v\n%s", err, out)
		}
		for _, want := range []string{"1 grant(s) and 3 message(s) not sent", "kept because grants remain in /var/lib/relayd: /etc/relayd/relayd.key", "the user relayd stays"} {
			if !strings.Contains(out, want) {
				t.Errorf("purge does not say %q:\n%s", want, out)
			}
		}
		want := slices.Concat(userDatabase, []string{"etc/relayd", "etc/relayd/relayd.key"}, stateFiles)
		slices.Sort(want)
		if got := r.added(); !slices.Equal(got, want) {
			t.Errorf("after the purge the root holds\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
		}
	})

	// Mail and no grant (password accounts): the purge keeps the state
	// directory and counts each message once, whether relayd wrote it as
	// one spool file, as one with changed metadata beside it, or (before
	// December 2026) as a message and a metadata file.
	t.Run("purge keeps mail without grants", func(t *testing.T) {
		r := newThrowawayRoot(t, dpkg)
		if out, err := r.run("-i", deb); err != nil {
			t.Fatalf("dpkg --root -i: %v\n%s", err, out)
		}
		state := r.path("var/lib/relayd")
		spool, err := queue.OpenSpool(filepath.Join(state, "queue"), nil)
		if err != nil {
			t.Fatal(err)
		}
		for i, id := range []string{"new1", "new2"} {
			e := &queue.Entry{ID: id, Account: "support", From: "support@example.com", Created: time.Now(), State: queue.StateQueued,
				Recipients: []queue.Recipient{{Addr: "customer@example.net", State: queue.RcptPending}}}
			if err := spool.Put(e, strings.NewReader("Subject: ticket\r\n\r\nhello\r\n")); err != nil {
				t.Fatal(err)
			}
			if i == 1 {
				e.Attempts = 1
				if err := spool.Update(e); err != nil {
					t.Fatal(err)
				}
			}
		}
		spool.Close()
		for name, content := range map[string]string{"old1.msg": "Subject: old\r\n\r\n", "old1.json": `{"id":"old1"}`} {
			if err := os.WriteFile(filepath.Join(state, "queue", name), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		out, err := r.run("--purge", "relayd")
		if err != nil {
			t.Fatalf("dpkg --purge: %v\n%s", err, out)
		}
		if !strings.Contains(out, "0 grant(s) and 3 message(s) not sent") {
			t.Errorf("purge does not count the 3 messages:\n%s", out)
		}
		if _, err := os.Stat(filepath.Join(state, "queue", "new1.spool")); err != nil {
			t.Errorf("the purge removed queued mail: %v", err)
		}
	})

	// With neither grants nor mail, a purge removes /etc/relayd (a client
	// secret and a key included) and /var/lib/relayd.
	t.Run("purge with nothing to keep", func(t *testing.T) {
		r := newThrowawayRoot(t, dpkg)
		if out, err := r.run("-i", deb); err != nil {
			t.Fatalf("dpkg --root -i: %v\n%s", err, out)
		}
		for _, name := range []string{"support.secret", "relayd.key"} {
			if err := os.WriteFile(r.path("etc/relayd/"+name), []byte("x\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		out, err := r.run("--purge", "relayd")
		if err != nil {
			t.Fatalf("dpkg --purge: %v\n%s", err, out)
		}
		if !strings.Contains(out, "/etc/relayd and /var/lib/relayd removed (no grants, no queued mail)") {
			t.Errorf("purge does not say what it removed:\n%s", out)
		}
		if got := r.added(); !slices.Equal(got, userDatabase) {
			t.Errorf("after the purge the root holds\n\t%s\nwant the user database only", strings.Join(got, "\n\t"))
		}
	})

	// Mail relayd sendmail left in the maildrop while the daemon was
	// stopped is mail not sent: the purge keeps /var/lib/relayd for it
	// and says so (an unfinished tmp.* write is not a message).
	t.Run("purge keeps the maildrop's mail", func(t *testing.T) {
		r := newThrowawayRoot(t, dpkg)
		if out, err := r.run("-i", deb); err != nil {
			t.Fatalf("dpkg --root -i: %v\n%s", err, out)
		}
		if err := os.MkdirAll(r.path("var/lib/relayd/maildrop"), 0o700); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"20261130T120000-1", "tmp.unfinished"} {
			if err := os.WriteFile(r.path("var/lib/relayd/maildrop/"+name), []byte("{}\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		out, err := r.run("--purge", "relayd")
		if err != nil {
			t.Fatalf("dpkg --purge: %v\n%s", err, out)
		}
		if !strings.Contains(out, "0 grant(s) and 1 message(s) not sent") || !strings.Contains(out, "1 of them in its maildrop") {
			t.Errorf("purge does not count the maildrop's message:\n%s", out)
		}
		if _, err := os.Stat(r.path("var/lib/relayd/maildrop/20261130T120000-1")); err != nil {
			t.Errorf("the maildrop's message is gone: %v", err)
		}
	})

	// A relayd user that cannot be created fails the configuration with
	// words that say what to do, instead of a service that cannot start.
	t.Run("no user, no configuration", func(t *testing.T) {
		r := newThrowawayRoot(t, dpkg)
		if err := os.MkdirAll(r.path("etc/passwd"), 0o755); err != nil {
			t.Fatal(err)
		}
		out, err := r.run("-i", deb)
		if err == nil {
			t.Fatalf("dpkg -i succeeded with no way to create the user:\n%s", out)
		}
		if !strings.Contains(out, "relayd: systemd-sysusers could not create the user relayd") || !strings.Contains(out, "dpkg --configure relayd") {
			t.Errorf("dpkg -i does not say why:\n%s", out)
		}
	})
}

// make rpm builds from the same recipe an rpm holding the same files, with
// its own scripts, which rpmlint passes (packaging/rpmlint.toml says why
// each message it filters is wrong for relayd).
func TestRpmPackage(t *testing.T) {
	realserver.RequireBinary(t, "scdoc", "scdoc")
	rpm := realserver.RequireBinary(t, "rpm", "rpm")
	build := t.TempDir()
	if out, err := exec.Command("make", "-C", "..", "rpm", "BUILD="+build, "VERSION=0.0.0").CombinedOutput(); err != nil {
		t.Fatalf("make rpm: %v\n%s", err, out)
	}
	rpms, _ := filepath.Glob(filepath.Join(build, "*.rpm"))
	if len(rpms) != 1 {
		t.Fatalf("make rpm made %v", rpms)
	}
	out, err := exec.Command(rpm, "-qlp", rpms[0]).CombinedOutput()
	for _, f := range []string{"/usr/bin/relayd", "/usr/lib/systemd/system/relayd.service", "/etc/relayd/relayd.toml",
		"/usr/lib/sysusers.d/relayd.conf", "/usr/share/man/man8/relayd.8.gz", "/usr/share/man/man7/relayd-setup.7.gz",
		"/usr/share/doc/relayd/README.md.gz", "/usr/share/doc/relayd/examples/relayd.toml"} {
		if err != nil || !strings.Contains(string(out), f+"\n") {
			t.Errorf("rpm -qlp lacks %s: %v\n%s", f, err, out)
		}
	}
	cfg, _ := exec.Command(rpm, "-qcp", rpms[0]).CombinedOutput()
	if !strings.Contains(string(cfg), "/etc/relayd/relayd.toml") {
		t.Errorf("the configuration is not a config file in the rpm:\n%s", cfg)
	}
	req, _ := exec.Command(rpm, "-qpR", rpms[0]).CombinedOutput()
	if !strings.Contains(string(req), "systemd\n") || !strings.Contains(string(req), "ca-certificates\n") {
		t.Errorf("rpm -qpR:\n%s", req)
	}
	scripts, _ := exec.Command(rpm, "-qp", "--scripts", rpms[0]).CombinedOutput()
	for _, want := range []string{"systemctl --no-reload preset relayd.service", "systemctl --no-reload disable --now relayd.service", "systemctl try-restart relayd.service"} {
		if !strings.Contains(string(scripts), want) {
			t.Errorf("the rpm's scripts lack %q:\n%s", want, scripts)
		}
	}
	if strings.Contains(string(scripts), "deb-systemd") {
		t.Errorf("the rpm got Debian's scripts:\n%s", scripts)
	}
	rpmlint := realserver.RequireBinary(t, "rpmlint", "rpmlint")
	if out, err := exec.Command(rpmlint, "-c", "rpmlint.toml", rpms[0]).CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "0 errors, 0 warnings") {
		t.Errorf("rpmlint: %v\n%s", err, out)
	}
}

// group is the throwaway root's /etc/group.
func group(t *testing.T, r *throwawayRoot) []byte {
	t.Helper()
	b, err := os.ReadFile(r.path("etc/group"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
