/* fleetroom_auth: a Mosquitto 2.0 plugin (plugin API v5) that enforces the fleet's identities
 * and access rules, exactly as the amqtt plugins in broker/amqtt_plugins.py do.
 *
 * Logins: user U's password is base64url(HMAC-SHA256(secret, "fleetroom-user:" U)[:18]), as
 * protocol.identity.derive_password; user names must match the rules file's pattern whole; a
 * client id must be the user name or the name, the separator and a suffix (owns_client_id), so
 * no login can take over another user's client id.
 * ACL: each role's publish, read and retain filters come from the rules file that
 * broker/mosquitto_config.py writes from broker.acl.rules_for ("%u" is the user's own name);
 * a subscription is allowed only if a read filter covers it (broker.acl.filter_covers); a
 * retained publish only on a retain filter. Anything else is denied.
 *
 * With mutual TLS, a client certificate's CN must also be the user name.
 * Options: plugin_opt_secret_file (the fleet secret; surrounding white space is ignored, as
 * `fleetroom --secret-file` does) and plugin_opt_rules_file.
 * Build: cc -shared -fPIC -O2 -o fleetroom_auth.so fleetroom_auth.c -lcrypto
 */
#include <ctype.h>
#include <regex.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/x509.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define MAX_ROLES 16
#define MAX_NAMED 16
#define MAX_FILTERS 32
#define MAX_LINE 1024
#define MAX_USER 256
#define MAX_EXPANDED 2048
#define MAX_SECRET 4096
#define PASSWORD_BYTES 18 /* of the digest, base64url-encoded into 24 characters */
#define PASSWORD_CHARS 24

static const char PASSWORD_TAG[] = "fleetroom-user:";

enum kind { PUBLISH, READ, RETAIN, KINDS };
static const char *const KIND_NAMES[KINDS] = {"publish", "read", "retain"};

struct role {
	char *name;
	char *filters[KINDS][MAX_FILTERS];
	int count[KINDS];
};

struct named { /* a fixed user name, or a user-name prefix, and the role it stands for */
	char *text;
	int role;
};

struct rules {
	struct role roles[MAX_ROLES];
	int role_count;
	struct named fixed[MAX_NAMED];
	int fixed_count;
	struct named prefixes[MAX_NAMED];
	int prefix_count;
	int default_role;
	regex_t user_name;
	bool has_user_name;
	char *separator;
};

struct plugin {
	mosquitto_plugin_id_t *id;
	unsigned char secret[MAX_SECRET];
	size_t secret_len;
	struct rules rules;
};

/* A copy of untrusted text that is safe to log: printable ASCII, the rest as \xHH, truncated. */
static void printable(char *out, size_t size, const char *in)
{
	size_t n = 0;
	for(; in && *in && n + 5 < size; in++){
		unsigned char c = (unsigned char)*in;
		if(c >= 0x20 && c < 0x7f && c != '\\'){
			out[n++] = (char)c;
		}else{
			n += (size_t)snprintf(out + n, size - n, "\\x%02x", c);
		}
	}
	out[n] = '\0';
}

/* True if every topic matched by `requested` is matched by `allowed` (broker.acl.filter_covers). */
static bool filter_covers(const char *allowed, const char *requested)
{
	const char *a = allowed, *w = requested;
	bool a_done = false, w_done = false;
	for(;;){
		if(a_done) return w_done;
		const char *a_end = strchr(a, '/');
		size_t a_len = a_end ? (size_t)(a_end - a) : strlen(a);
		if(a_len == 1 && a[0] == '#') return true;
		if(w_done) return false;
		const char *w_end = strchr(w, '/');
		size_t w_len = w_end ? (size_t)(w_end - w) : strlen(w);
		if(a_len == 1 && a[0] == '+'){
			if(w_len == 1 && w[0] == '#') return false;
		}else if(a_len != w_len || memcmp(a, w, a_len) != 0){
			return false;
		}
		if(a_end) a = a_end + 1; else a_done = true;
		if(w_end) w = w_end + 1; else w_done = true;
	}
}

/* `filter` with every "%u" replaced by `user`; false if it does not fit. */
static bool expand(char *out, size_t size, const char *filter, const char *user)
{
	size_t n = 0, user_len = strlen(user);
	while(*filter){
		const char *piece = filter;
		size_t len = 1;
		if(filter[0] == '%' && filter[1] == 'u'){
			piece = user;
			len = user_len;
			filter += 2;
		}else{
			filter++;
		}
		if(n + len >= size) return false;
		memcpy(out + n, piece, len);
		n += len;
	}
	out[n] = '\0';
	return true;
}

/* The role of a user name that has logged in: a fixed user, a prefix, or the default; -1 if none. */
static int role_of(const struct rules *r, const char *user)
{
	if(!user || !*user) return -1;
	for(int i = 0; i < r->fixed_count; i++){
		if(!strcmp(r->fixed[i].text, user)) return r->fixed[i].role;
	}
	for(int i = 0; i < r->prefix_count; i++){
		if(!strncmp(r->prefixes[i].text, user, strlen(r->prefixes[i].text))) return r->prefixes[i].role;
	}
	return r->default_role;
}

/* True if the user name names somebody: a fixed user, or one matching the pattern whole. */
static bool valid_user(const struct rules *r, const char *user)
{
	if(!user || !*user || strlen(user) >= MAX_USER) return false;
	for(int i = 0; i < r->fixed_count; i++){
		if(!strcmp(r->fixed[i].text, user)) return true;
	}
	return r->has_user_name && regexec(&r->user_name, user, 0, NULL, 0) == 0 && role_of(r, user) >= 0;
}

/* True if `user` may connect with `client_id` (protocol.identity.owns_client_id). */
static bool owns_client_id(const struct rules *r, const char *user, const char *client_id)
{
	size_t n = strlen(user);
	if(!client_id || strncmp(client_id, user, n) != 0) return false;
	return client_id[n] == '\0' || !strncmp(client_id + n, r->separator, strlen(r->separator));
}

/* True if `password` is the one derived for `user` from the fleet secret, compared in constant time. */
static bool password_matches(const struct plugin *p, const char *user, const char *password)
{
	unsigned char message[sizeof(PASSWORD_TAG) + MAX_USER], digest[EVP_MAX_MD_SIZE];
	unsigned char encoded[PASSWORD_CHARS + 1];
	unsigned int digest_len = 0;
	size_t tag_len = strlen(PASSWORD_TAG), user_len = strlen(user);

	if(!password || strlen(password) != PASSWORD_CHARS || user_len >= MAX_USER) return false;
	memcpy(message, PASSWORD_TAG, tag_len);
	memcpy(message + tag_len, user, user_len);
	if(!HMAC(EVP_sha256(), p->secret, (int)p->secret_len, message, tag_len + user_len, digest, &digest_len)){
		return false;
	}
	EVP_EncodeBlock(encoded, digest, PASSWORD_BYTES);
	for(int i = 0; i < PASSWORD_CHARS; i++){
		if(encoded[i] == '+') encoded[i] = '-';
		else if(encoded[i] == '/') encoded[i] = '_';
	}
	return CRYPTO_memcmp(encoded, password, PASSWORD_CHARS) == 0;
}

/* With mutual TLS (`require_certificate true`), the certificate's CN must be the login's user
 * name, as on the embedded broker; without a certificate there is nothing to compare. */
static bool certificate_matches(struct mosquitto *client, const char *user)
{
	X509 *cert = mosquitto_client_certificate(client);
	char cn[128];
	int len;
	if(cert == NULL) return true;
	len = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof(cn));
	X509_free(cert);
	return len > 0 && (size_t)len == strlen(user) && strcmp(cn, user) == 0;
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	const struct plugin *p = userdata;
	const char *client_id = mosquitto_client_id(ed->client);
	const char *why = NULL;
	char user_text[96], id_text[96];
	(void)event;

	if(!valid_user(&p->rules, ed->username)) why = "not a fleet user name";
	else if(!owns_client_id(&p->rules, ed->username, client_id)) why = "client id belongs to another user";
	else if(!password_matches(p, ed->username, ed->password)) why = "wrong password";
	else if(!certificate_matches(ed->client, ed->username)) why = "client certificate names another user";
	if(!why) return MOSQ_ERR_SUCCESS;
	printable(user_text, sizeof(user_text), ed->username);
	printable(id_text, sizeof(id_text), client_id);
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "fleetroom_auth: refused login of '%s' as client '%s': %s",
			user_text, id_text, why);
	return MOSQ_ERR_AUTH;
}

/* True if one of `role`'s filters of `kind`, for `user`, covers `topic`. */
static bool allowed(const struct role *role, enum kind kind, const char *user, const char *topic)
{
	char filter[MAX_EXPANDED];
	for(int i = 0; i < role->count[kind]; i++){
		if(expand(filter, sizeof(filter), role->filters[kind][i], user) && filter_covers(filter, topic)) return true;
	}
	return false;
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	const struct plugin *p = userdata;
	const char *user = mosquitto_client_username(ed->client);
	int role = role_of(&p->rules, user);
	bool ok = false;
	(void)event;

	if(role < 0 || !ed->topic) return MOSQ_ERR_ACL_DENIED;
	const struct role *rules = &p->rules.roles[role];
	switch(ed->access){
		case MOSQ_ACL_UNSUBSCRIBE:
			return MOSQ_ERR_SUCCESS;
		case MOSQ_ACL_SUBSCRIBE:
		case MOSQ_ACL_READ:
			ok = allowed(rules, READ, user, ed->topic);
			break;
		case MOSQ_ACL_WRITE:
			ok = !strpbrk(ed->topic, "+#") && allowed(rules, ed->retain ? RETAIN : PUBLISH, user, ed->topic);
			break;
		default:
			break;
	}
	return ok ? MOSQ_ERR_SUCCESS : MOSQ_ERR_ACL_DENIED;
}

static int find_role(struct rules *r, const char *name)
{
	for(int i = 0; i < r->role_count; i++){
		if(!strcmp(r->roles[i].name, name)) return i;
	}
	if(r->role_count == MAX_ROLES) return -1;
	r->roles[r->role_count].name = strdup(name);
	return r->roles[r->role_count].name ? r->role_count++ : -1;
}

static bool add_named(struct rules *r, struct named *list, int *count, const char *text, const char *role)
{
	int i = *count < MAX_NAMED && text && role ? find_role(r, role) : -1;
	char *copy = i >= 0 ? strdup(text) : NULL;
	if(!copy) return false;
	list[*count].text = copy;
	list[(*count)++].role = i;
	return true;
}

static bool add_filter(struct rules *r, enum kind kind, const char *role_name, const char *filter)
{
	char longest_user[MAX_USER], expanded[MAX_EXPANDED];
	int i = role_name && filter ? find_role(r, role_name) : -1;
	memset(longest_user, 'x', sizeof(longest_user) - 1);
	longest_user[sizeof(longest_user) - 1] = '\0';
	/* a filter must expand for the longest user name, or it would deny that user silently */
	if(i < 0 || r->roles[i].count[kind] == MAX_FILTERS || !expand(expanded, sizeof(expanded), filter, longest_user)){
		return false;
	}
	char *copy = strdup(filter);
	if(!copy) return false;
	r->roles[i].filters[kind][r->roles[i].count[kind]++] = copy;
	return true;
}

static bool set_user_name(struct rules *r, const char *pattern)
{
	char anchored[MAX_LINE + 8];
	if(!pattern || r->has_user_name) return false;
	snprintf(anchored, sizeof(anchored), "^(%s)$", pattern);
	r->has_user_name = regcomp(&r->user_name, anchored, REG_EXTENDED | REG_NOSUB) == 0;
	return r->has_user_name;
}

/* Apply one line of the rules file: "keyword args"; false if it is not understood. */
static bool rules_line(struct rules *r, char *line)
{
	char *rest = NULL;
	char *word = strtok_r(line, " ", &rest);
	if(!word || word[0] == '#') return true;
	if(rest && !*rest) rest = NULL;
	if(!strcmp(word, "user_name")) return set_user_name(r, rest);
	if(!strcmp(word, "client_id_separator")){
		free(r->separator);
		r->separator = rest && *rest ? strdup(rest) : NULL;
		return r->separator != NULL;
	}
	if(!strcmp(word, "default")) return rest && (r->default_role = find_role(r, rest)) >= 0;
	char *first = rest ? strtok_r(NULL, " ", &rest) : NULL;
	if(rest && !*rest) rest = NULL;
	if(!strcmp(word, "fixed")) return add_named(r, r->fixed, &r->fixed_count, first, rest);
	if(!strcmp(word, "prefix")) return add_named(r, r->prefixes, &r->prefix_count, first, rest);
	for(int k = 0; k < KINDS; k++){
		if(!strcmp(word, KIND_NAMES[k])) return add_filter(r, (enum kind)k, first, rest);
	}
	return false;
}

static int load_rules(struct rules *r, const char *path)
{
	char line[MAX_LINE];
	int number = 0;
	FILE *f = path ? fopen(path, "r") : NULL;
	if(!f){
		mosquitto_log_printf(MOSQ_LOG_ERR, "fleetroom_auth: cannot read plugin_opt_rules_file %s", path ? path : "(not set)");
		return MOSQ_ERR_INVAL;
	}
	while(fgets(line, sizeof(line), f)){
		number++;
		size_t len = strlen(line);
		if(len && line[len - 1] == '\n') line[--len] = '\0';
		if(len == sizeof(line) - 1 || !rules_line(r, line)){
			mosquitto_log_printf(MOSQ_LOG_ERR, "fleetroom_auth: %s line %d is not understood", path, number);
			fclose(f);
			return MOSQ_ERR_INVAL;
		}
	}
	fclose(f);
	if(!r->has_user_name || !r->separator || r->default_role < 0){
		mosquitto_log_printf(MOSQ_LOG_ERR, "fleetroom_auth: %s needs user_name, client_id_separator and default", path);
		return MOSQ_ERR_INVAL;
	}
	return MOSQ_ERR_SUCCESS;
}

static int load_secret(struct plugin *p, const char *path)
{
	FILE *f = path ? fopen(path, "rb") : NULL;
	size_t start = 0, len = f ? fread(p->secret, 1, sizeof(p->secret), f) : 0;
	bool too_long = f && !feof(f);
	if(f) fclose(f);
	while(len > start && isspace(p->secret[len - 1])) len--;
	while(start < len && isspace(p->secret[start])) start++;
	if(!f || too_long || len == start){
		mosquitto_log_printf(MOSQ_LOG_ERR, "fleetroom_auth: plugin_opt_secret_file %s is missing, empty or too long",
				path ? path : "(not set)");
		return MOSQ_ERR_INVAL;
	}
	memmove(p->secret, p->secret + start, len - start);
	p->secret_len = len - start;
	return MOSQ_ERR_SUCCESS;
}

static void free_plugin(struct plugin *p)
{
	struct rules *r = &p->rules;
	for(int i = 0; i < r->role_count; i++){
		for(int k = 0; k < KINDS; k++){
			for(int j = 0; j < r->roles[i].count[k]; j++) free(r->roles[i].filters[k][j]);
		}
		free(r->roles[i].name);
	}
	for(int i = 0; i < r->fixed_count; i++) free(r->fixed[i].text);
	for(int i = 0; i < r->prefix_count; i++) free(r->prefixes[i].text);
	if(r->has_user_name) regfree(&r->user_name);
	free(r->separator);
	OPENSSL_cleanse(p->secret, sizeof(p->secret));
	free(p);
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata, struct mosquitto_opt *options,
		int option_count)
{
	const char *secret_file = NULL, *rules_file = NULL;
	struct plugin *p = calloc(1, sizeof(*p));
	if(!p) return MOSQ_ERR_NOMEM;
	p->id = identifier;
	p->rules.default_role = -1;
	for(int i = 0; i < option_count; i++){
		if(!strcmp(options[i].key, "secret_file")) secret_file = options[i].value;
		else if(!strcmp(options[i].key, "rules_file")) rules_file = options[i].value;
	}
	int rc = load_secret(p, secret_file);
	if(rc == MOSQ_ERR_SUCCESS) rc = load_rules(&p->rules, rules_file);
	if(rc == MOSQ_ERR_SUCCESS) rc = mosquitto_callback_register(identifier, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, p);
	if(rc == MOSQ_ERR_SUCCESS) rc = mosquitto_callback_register(identifier, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, p);
	if(rc != MOSQ_ERR_SUCCESS){
		mosquitto_callback_unregister(identifier, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
		free_plugin(p);
		return rc;
	}
	*userdata = p;
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	struct plugin *p = userdata;
	(void)options;
	(void)option_count;
	if(!p) return MOSQ_ERR_SUCCESS;
	mosquitto_callback_unregister(p->id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
	mosquitto_callback_unregister(p->id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
	free_plugin(p);
	return MOSQ_ERR_SUCCESS;
}
