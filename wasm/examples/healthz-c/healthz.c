/*
 * healthz-c is an observer plugin in C against ABI v1 (wasm/ABI.md), with
 * wasi-libc and no protobuf library: on every call it GETs the target's
 * /healthz and emits one observation whose result is the answer's: ok for
 * a 2xx status, failed for any other, error when no answer came. README.md
 * says how to build it and what it emits.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The host functions of the "polar" module. Pointers are into this
 * module's memory; the host copies what it needs before returning. */
#define POLAR(name) __attribute__((import_module("polar"), import_name(name)))
POLAR("emit") int32_t polar_emit(const uint8_t *ptr, int32_t len);
POLAR("log") void polar_log(int32_t level, const char *ptr, int32_t len);
POLAR("http_request") int32_t polar_http_request(const uint8_t *ptr, int32_t len);
POLAR("http_response") int32_t polar_http_response(uint8_t *ptr, int32_t len);

enum { LOG_INFO = 1, LOG_ERROR = 3 };
enum { SEVERITY_INFO = 1, SEVERITY_HIGH = 4 };
enum { RESULT_OK = 1, RESULT_FAILED = 2, RESULT_ERROR = 4 };

static const char path[] = "/healthz";

static void logf_(int32_t level, const char *fmt, long v) {
	char line[128];
	int n = snprintf(line, sizeof line, fmt, v);
	if (n > 0) {
		polar_log(level, line, n < (int)sizeof line ? n : (int)sizeof line - 1);
	}
}

/* A protobuf encoder over a fixed buffer: each field a tag (field number
 * << 3 | wire type) and its value, a varint (wire type 0) or a length and
 * bytes (wire type 2). Writing past the end sets overflow, and the record
 * is not sent. */
struct buf {
	uint8_t b[512];
	size_t n;
	int overflow;
};

static void put_varint(struct buf *w, uint64_t x) {
	do {
		if (w->n == sizeof w->b) {
			w->overflow = 1;
			return;
		}
		w->b[w->n++] = (uint8_t)(x & 0x7f) | (x > 0x7f ? 0x80 : 0);
		x >>= 7;
	} while (x);
}

static void put_bytes(struct buf *w, uint32_t field, const void *p, size_t len) {
	put_varint(w, (uint64_t)field << 3 | 2);
	put_varint(w, len);
	if (len > sizeof w->b - w->n) {
		w->overflow = 1;
		return;
	}
	memcpy(w->b + w->n, p, len);
	w->n += len;
}

static void put_string(struct buf *w, uint32_t field, const char *s) { put_bytes(w, field, s, strlen(s)); }

static void put_enum(struct buf *w, uint32_t field, int32_t v) {
	put_varint(w, (uint64_t)field << 3);
	put_varint(w, (uint64_t)(int64_t)v); /* negative enums are 10 bytes, as protobuf writes them */
}

/* A protobuf decoder: the varint at *p, advancing *p; 0 when the input
 * ends first or the varint runs past 10 bytes. */
static int get_varint(const uint8_t **p, const uint8_t *end, uint64_t *x) {
	*x = 0;
	for (int shift = 0; shift < 70 && *p < end; shift += 7) {
		uint8_t c = *(*p)++;
		*x |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80)) {
			return 1;
		}
	}
	return 0;
}

/* status_code is HttpResponse's field 1, a varint: the other fields
 * (headers, body, truncated) are skipped. -1 when the message is
 * malformed. */
static int32_t status_code(const uint8_t *p, const uint8_t *end) {
	int32_t status = 0;
	while (p < end) {
		uint64_t tag, v;
		if (!get_varint(&p, end, &tag)) {
			return -1;
		}
		switch (tag & 7) {
		case 0:
			if (!get_varint(&p, end, &v)) {
				return -1;
			}
			if (tag >> 3 == 1) {
				status = (int32_t)v;
			}
			break;
		case 1:
			if (end - p < 8) {
				return -1;
			}
			p += 8;
			break;
		case 2:
			if (!get_varint(&p, end, &v) || v > (uint64_t)(end - p)) {
				return -1;
			}
			p += v;
			break;
		case 5:
			if (end - p < 4) {
				return -1;
			}
			p += 4;
			break;
		default:
			return -1;
		}
	}
	return status;
}

/* get asks the host for GET path: the status, or the negative result of
 * http_request or http_response. */
static int32_t get(void) {
	struct buf req = {0};
	put_string(&req, 1, "GET");
	put_string(&req, 2, path);
	int32_t n = polar_http_request(req.b, (int32_t)req.n);
	if (n < 0) {
		return n;
	}
	uint8_t *resp = malloc((size_t)n);
	if (resp == NULL) {
		return -4;
	}
	int32_t got = polar_http_response(resp, n);
	int32_t status = got == n ? status_code(resp, resp + n) : got;
	free(resp);
	return status;
}

/* polar_abi_version: the ABI this module speaks. */
__attribute__((export_name("polar_abi_version"))) int32_t polar_abi_version(void) { return 1; }

/* polar_alloc: the host writes the ObserveRequest into this buffer; it is
 * this module's to free, which polar_observe does. */
__attribute__((export_name("polar_alloc"))) uint8_t *polar_alloc(int32_t size) {
	if (size < 0 || size > (16 << 20)) {
		return NULL; /* 0: the ABI's failure */
	}
	return malloc(size ? (size_t)size : 1);
}

/* polar_observe: one call. The request (observer, target, config, time,
 * state) is not needed: the path is fixed. */
__attribute__((export_name("polar_observe"))) int32_t polar_observe(uint8_t *request, int32_t len) {
	(void)len;
	free(request);

	int32_t status = get();
	int32_t result = RESULT_OK, severity = SEVERITY_INFO;
	char error[64] = "", payload[64];
	if (status < 0) {
		result = RESULT_ERROR, severity = SEVERITY_HIGH;
		snprintf(error, sizeof error, "GET %s: http_request failed (%d)", path, (int)status);
		snprintf(payload, sizeof payload, "{\"status\":null}");
	} else {
		if (status < 200 || status > 299) {
			result = RESULT_FAILED, severity = SEVERITY_HIGH;
			snprintf(error, sizeof error, "GET %s: status %d", path, (int)status);
		}
		snprintf(payload, sizeof payload, "{\"status\":%d}", (int)status);
	}

	/* A PluginObservation: type_suffix 1, severity 2, payload 4, schema 5,
	 * labels 6 (map entries {1: key, 2: value}), result 7, error 8. */
	struct buf obs = {0}, label = {0};
	put_string(&obs, 1, "healthz");
	put_enum(&obs, 2, severity);
	put_string(&obs, 4, payload);
	put_string(&obs, 5, "application/json");
	put_string(&label, 1, "path");
	put_string(&label, 2, path);
	put_bytes(&obs, 6, label.b, label.n);
	put_enum(&obs, 7, result);
	if (error[0]) {
		put_string(&obs, 8, error);
	}
	if (obs.overflow || label.overflow) {
		logf_(LOG_ERROR, "healthz-c: observation over %ld bytes", (long)sizeof obs.b);
		return 1;
	}
	int32_t rc = polar_emit(obs.b, (int32_t)obs.n);
	if (rc != 0) {
		logf_(LOG_ERROR, "healthz-c: emit returned %ld", rc);
		return 1;
	}
	logf_(LOG_INFO, "healthz-c: status %ld", status);
	return 0;
}
