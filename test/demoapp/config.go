package main

import (
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"time"
)

// config is what the environment asks of the app.
type config struct {
	host, port string
	version    string
	pod        string        // the pod's name, said in every answer; "" when unset
	errorRate  float64       // share of GET / answered 500, in [0, 1]
	latency    time.Duration // added to every GET /
	failAfter  time.Duration // uptime before errorRate applies
	failFile   string        // when set, errorRate applies only while this file exists
}

// parseConfig reads the app's environment through getenv (os.Getenv in
// main), so tests can hand it a map. An empty value counts as unset, as in a
// container spec. Every error names its variable: a pod's log should say
// which line of the manifest is wrong.
func parseConfig(getenv func(string) string) (config, error) {
	cfg := config{version: getenv("VERSION"), pod: getenv("POD_NAME")}
	if cfg.version == "" {
		cfg.version = "unknown"
	}
	port := getenv("PORT")
	if port == "" {
		return config{}, errors.New("PORT is not set: the port to listen on")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return config{}, fmt.Errorf("PORT=%q: want a port number from 1 to 65535", port)
	}
	cfg.port = port
	cfg.host = getenv("HOST")
	if cfg.host == "" {
		cfg.host = "127.0.0.1"
	}
	if net.ParseIP(cfg.host) == nil {
		return config{}, fmt.Errorf("HOST=%q: want an IP address to listen on, such as the pod's 198.18.0.5", cfg.host)
	}

	var err error
	if cfg.latency, err = duration(getenv, "LATENCY"); err != nil {
		return config{}, err
	}
	if cfg.failAfter, err = duration(getenv, "FAIL_AFTER"); err != nil {
		return config{}, err
	}
	rate := getenv("ERROR_RATE")
	switch {
	case rate != "":
		r, err := strconv.ParseFloat(rate, 64)
		if err != nil || math.IsNaN(r) || r < 0 || r > 1 {
			return config{}, fmt.Errorf("ERROR_RATE=%q: want a share from 0 to 1, such as 0.05", rate)
		}
		cfg.errorRate = r
	case getenv("FAIL_AFTER") != "" || getenv("FAIL_FILE") != "":
		// FAIL_AFTER or FAIL_FILE alone means "fails completely after a
		// while": a regressing canary, without a second variable to set.
		cfg.errorRate = 1
	}
	cfg.failFile = getenv("FAIL_FILE")
	return cfg, nil
}

// duration reads a non-negative Go duration such as 50ms; unset is zero.
func duration(getenv func(string) string, name string) (time.Duration, error) {
	v := getenv(name)
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%s=%q: want a Go duration of at least 0, such as 50ms or 2m", name, v)
	}
	return d, nil
}
