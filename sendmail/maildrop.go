package sendmail

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/relayd/relayd/internal/statedir"
	"github.com/relayd/relayd/queue"
)

// MaildropDir is the maildrop's directory under state_dir: messages root
// or relayd's own user submitted while the daemon was stopped. It is
// mode 0700 and belongs to state_dir's owner, like everything there; only
// root and that user write into it, so nothing in it needs a setgid
// helper and nothing is group-writable.
const MaildropDir = "maildrop"

// Each file of the maildrop is one line of JSON (dropped), then the
// prepared message (header with relayd's additions, then body). A file is
// written as tmp.RANDOM, fsynced, renamed to its final name and the
// directory fsynced: a name without the tmp. prefix is a whole message.
const (
	tmpPrefix    = "tmp."
	failedPrefix = "failed."
)

// dropped is the envelope of a message in the maildrop.
type dropped struct {
	Account string    `json:"account"`
	From    string    `json:"from"`
	To      []string  `json:"to"`
	UID     int       `json:"uid"`
	Time    time.Time `json:"time"`
}

// Drop stores p durably in the maildrop of stateDir, opened through
// package statedir (no link followed; what root creates is given the
// directory's owner), and returns the path of the file. When it returns
// nil the message survives a crash; when it returns an error nothing of
// it is left but, at worst, a temporary file the daemon removes.
func Drop(stateDir string, p *Prepared) (string, error) {
	top, err := statedir.Open(stateDir)
	if err != nil {
		return "", err
	}
	defer top.Close()
	dir, err := top.Sub(MaildropDir, true)
	if err != nil {
		return "", err
	}
	defer dir.Close()
	f, err := dir.CreateTemp(tmpPrefix)
	if err != nil {
		return "", fmt.Errorf("writing to the maildrop: %w", err)
	}
	tmp := f.Name()[strings.LastIndexByte(f.Name(), '/')+1:]
	meta, _ := json.Marshal(dropped{Account: p.Account, From: p.From, To: p.To, UID: p.UID, Time: p.Now})
	w := bufio.NewWriterSize(f, 64<<10)
	w.Write(meta)
	w.WriteString("\n")
	w.Write(p.Header)
	_, err = io.Copy(w, p.Body)
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	var b [6]byte
	rand.Read(b[:])
	name := fmt.Sprintf("%d.%s", p.Now.UnixNano(), hex.EncodeToString(b[:]))
	if err == nil {
		err = dir.Rename(tmp, dir, name)
	}
	if err == nil {
		err = dir.Sync()
	}
	if err != nil {
		dir.Remove(tmp)
		dir.Remove(name)
		return "", fmt.Errorf("writing to the maildrop %s: %w", dir.Path(), err)
	}
	return dir.Join(name), nil
}

// Submitter stores a message; *queue.Queue implements it.
type Submitter interface {
	Submit(*queue.Submission) (string, error)
}

// Pickup queues every message of the maildrop of stateDir with q and
// removes it once queued (at least once: a crash in between queues it
// again at the next pickup). A file that cannot be read as a message is
// renamed failed.NAME and logged, never deleted; temporary files older
// than a day (left by a killed relayd sendmail) are removed. It returns
// how many messages it queued. The daemon calls it at start and every
// minute, from one goroutine.
func Pickup(stateDir, hostname string, q Submitter, log *slog.Logger) (int, error) {
	top, err := statedir.OpenExisting(stateDir)
	if err != nil {
		if os.IsNotExist(err) {
			return 0, nil
		}
		return 0, err
	}
	defer top.Close()
	dir, err := top.Sub(MaildropDir, false)
	if err != nil {
		if os.IsNotExist(err) {
			return 0, nil
		}
		return 0, err
	}
	defer dir.Close()
	des, err := dir.ReadDir()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, de := range des {
		name := de.Name()
		switch {
		case strings.HasPrefix(name, failedPrefix):
			continue
		case strings.HasPrefix(name, tmpPrefix):
			if fi, err := de.Info(); err == nil && time.Since(fi.ModTime()) > 24*time.Hour {
				dir.Remove(name)
			}
			continue
		}
		id, err := pickOne(dir, name, hostname, q)
		if err != nil {
			var bad *badDrop
			if !errors.As(err, &bad) {
				return n, fmt.Errorf("queueing %s: %w", dir.Join(name), err)
			}
			log.Error("maildrop: a file is no message relayd sendmail wrote; it was renamed and left for an admin to look at",
				"file", dir.Join(failedPrefix+name), "err", err)
			dir.Rename(name, dir, failedPrefix+name)
			continue
		}
		if err := dir.Remove(name); err != nil {
			return n, err
		}
		if err := dir.Sync(); err != nil {
			return n, err
		}
		log.Info("maildrop: queued a message relayd sendmail left while relayd was stopped", "id", id, "file", dir.Join(name))
		n++
	}
	return n, nil
}

// badDrop is a maildrop file that is no message.
type badDrop struct{ err error }

func (b *badDrop) Error() string { return b.err.Error() }

// pickOne queues the maildrop file name.
func pickOne(dir *statedir.Dir, name, hostname string, q Submitter) (string, error) {
	f, err := dir.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return "", &badDrop{err}
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 64<<10)
	line, err := br.ReadBytes('\n')
	if err != nil {
		return "", &badDrop{fmt.Errorf("no envelope line: %w", err)}
	}
	var d dropped
	if err := json.Unmarshal(line, &d); err != nil || d.Account == "" || len(d.To) == 0 {
		return "", &badDrop{fmt.Errorf("the envelope line is not relayd's (%v)", err)}
	}
	p := &Prepared{Account: d.Account, From: d.From, To: d.To, UID: d.UID, Now: d.Time, Body: br}
	return q.Submit(p.Submission(hostname))
}
