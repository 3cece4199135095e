/* The lab's VDDK: a test double of VMware's libvixDiskLib, built by lab/vsphere/up.sh.
 *
 * VMware's VDDK is not redistributable, so the tests read the lab's disks through this library
 * instead: the same entry points, structure layouts and rules (see vixDiskLib.h), answered from
 * the lab's real state. It serves a disk as of a snapshot by starting qemu-nbd on the disk
 * image's internal qcow2 snapshot (the point-in-time view the lab's CreateSnapshot_Task made) and
 * reading it with libnbd; the allocated blocks are the image's real allocation.
 *
 * Where it matters it behaves as VDDK does:
 *  - InitEx once per process (a second call without Exit is refused), Exit at the end;
 *  - ConnectEx checks the server, the certificate thumbprint, the user and password, the VM
 *    (vmxSpec "moref=...") and the snapshot; Open checks the file as the snapshot names it;
 *  - reads are whole sectors; a read past the end is refused;
 *  - QueryAllocatedBlocks takes whole chunks of at least VIXDISKLIB_MIN_CHUNK_SIZE sectors and at
 *    most VIXDISKLIB_MAX_CHUNK_NUMBER of them per call, and answers in chunks;
 *  - a snapshot removed while a disk of it is open fails the reads that follow (the lab removes
 *    the snapshot's marker before it drops the snapshot, and every read checks it before and
 *    after reading, so no read returns data of a dropped snapshot);
 *  - errors are VIX codes, with their text from GetErrorText.
 *
 * Its facts come from <libdir>/lab.conf, written by the lab (tab-separated lines:
 * server, user, password, thumbprint, snapshots DIR, qemu-nbd PATH, and disk VM_MOREF FILE IMAGE).
 * A test's spy: when <libdir>/reads.log exists, each Close appends "FILE<tab>BYTES READ<tab>PID".
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <libnbd.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vixDiskLib.h"

#define EXPORT __attribute__((visibility("default")))
#define MAX_DISKS 256

struct disk_entry {
  char *vm;
  char *file;
  char *image;
};

static struct {
  char *server, *user, *password, *thumbprint, *snapshots, *qemu_nbd;
  char *datastore, *datastore_dir; /* the lab's NFS datastore ("[nfs-ds0] ") and its directory */
  struct disk_entry disks[MAX_DISKS];
  int ndisks;
} conf;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int initialized;
static VixDiskLibGenericLogFunc *log_fn, *warn_fn;

struct connection {
  char *vm;
  char *snapshot;
};

struct handle {
  struct nbd_handle *nbd;
  pid_t server;
  char *workdir;
  char *snapshot;
  char *file;
  uint64_t size;
  uint64_t bytes_read;
};

static char *libdir_path(const char *name);

static void say(VixDiskLibGenericLogFunc *fn, const char *fmt, ...) {
  va_list args;
  if (fn == NULL) return;
  va_start(args, fmt);
  fn(fmt, args);
  va_end(args);
}

static char *libdir_path(const char *name) {
  /* <libdir>/lib64/libvixDiskLib.so.N -> <libdir>/NAME */
  Dl_info info;
  char *copy, *dir, *path;
  if (dladdr((void *)libdir_path, &info) == 0 || info.dli_fname == NULL) return NULL;
  copy = strdup(info.dli_fname);
  dir = dirname(dirname(copy));
  if (asprintf(&path, "%s/%s", dir, name) < 0) path = NULL;
  free(copy);
  return path;
}

static int load_conf(void) {
  char *path = libdir_path("lab.conf"), *line = NULL;
  size_t cap = 0;
  FILE *fp;
  if (path == NULL || (fp = fopen(path, "r")) == NULL) {
    say(warn_fn, "lab VDDK: cannot read %s\n", path ? path : "lab.conf");
    free(path);
    return -1;
  }
  free(path);
  while (getline(&line, &cap, fp) > 0) {
    char *save = NULL, *key, *a, *b, *c;
    line[strcspn(line, "\n")] = '\0';
    key = strtok_r(line, "\t", &save);
    a = strtok_r(NULL, "\t", &save);
    if (key == NULL || a == NULL) continue;
    if (strcmp(key, "server") == 0) conf.server = strdup(a);
    else if (strcmp(key, "user") == 0) conf.user = strdup(a);
    else if (strcmp(key, "password") == 0) conf.password = strdup(a);
    else if (strcmp(key, "thumbprint") == 0) conf.thumbprint = strdup(a);
    else if (strcmp(key, "snapshots") == 0) conf.snapshots = strdup(a);
    else if (strcmp(key, "qemu-nbd") == 0) conf.qemu_nbd = strdup(a);
    else if (strcmp(key, "datastore") == 0 && (b = strtok_r(NULL, "\t", &save)) != NULL) {
      conf.datastore = strdup(a);
      conf.datastore_dir = strdup(b);
    }
    else if (strcmp(key, "disk") == 0 && conf.ndisks < MAX_DISKS) {
      b = strtok_r(NULL, "\t", &save);
      c = strtok_r(NULL, "\t", &save);
      if (b == NULL || c == NULL) continue;
      conf.disks[conf.ndisks].vm = strdup(a);
      conf.disks[conf.ndisks].file = strdup(b);
      conf.disks[conf.ndisks].image = strdup(c);
      conf.ndisks++;
    }
  }
  free(line);
  fclose(fp);
  return conf.server && conf.user && conf.password && conf.thumbprint && conf.snapshots && conf.qemu_nbd ? 0 : -1;
}

static int vm_known(const char *vm) {
  for (int i = 0; i < conf.ndisks; i++)
    if (strcmp(conf.disks[i].vm, vm) == 0) return 1;
  return 0;
}

static int snapshot_exists(const char *snapshot) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s", conf.snapshots, snapshot);
  return access(path, F_OK) == 0;
}

/* The image of ``file`` of ``vm``: the base disk's name, or a snapshot's delta of it ("-000001.vmdk"). */
static const char *image_of(const char *vm, const char *file) {
  size_t n = strlen(file);
  char base[PATH_MAX];
  snprintf(base, sizeof base, "%s", file);
  if (n > 12 && base[n - 12] == '-' && strcmp(base + n - 5, ".vmdk") == 0 &&
      strspn(base + n - 11, "0123456789") == 6)
    strcpy(base + n - 12, ".vmdk");
  for (int i = 0; i < conf.ndisks; i++)
    if (strcmp(conf.disks[i].vm, vm) == 0 && strcmp(conf.disks[i].file, base) == 0) return conf.disks[i].image;
  return NULL;
}

EXPORT VixError VixDiskLib_InitEx(uint32_t major, uint32_t minor, VixDiskLibGenericLogFunc *log_function,
                                  VixDiskLibGenericLogFunc *warn_function, VixDiskLibGenericLogFunc *panic_function,
                                  const char *lib_dir, const char *config_file) {
  (void)panic_function, (void)lib_dir, (void)config_file;
  pthread_mutex_lock(&lock);
  if (initialized) { /* VDDK: once per process */
    pthread_mutex_unlock(&lock);
    return VIX_E_FAIL;
  }
  log_fn = log_function;
  warn_fn = warn_function;
  if (load_conf() != 0) {
    pthread_mutex_unlock(&lock);
    return VIX_E_FAIL;
  }
  initialized = 1;
  pthread_mutex_unlock(&lock);
  say(log_fn, "lab VDDK %u.%u initialized\n", major, minor);
  return VIX_OK;
}

EXPORT void VixDiskLib_Exit(void) {
  pthread_mutex_lock(&lock);
  initialized = 0;
  pthread_mutex_unlock(&lock);
}

/* The texts of the codes the double returns: VMware's published VIX list where it gives one. */
static const struct {
  VixError code;
  const char *text;
} error_texts[] = {
    {VIX_OK, "The operation was successfully completed"},
    {VIX_E_INVALID_ARG, "One of the parameters was invalid"},
    {VIX_E_FILE_NOT_FOUND, "The file was not found"},
    {VIX_E_NOT_SUPPORTED, "The operation is not supported"},
    {VIX_E_FILE_ACCESS_ERROR, "You do not have access rights to this file"},
    {VIX_E_HOST_USER_PERMISSIONS, "Insufficient permissions in the host operating system"},
    {VIX_E_VM_NOT_FOUND, "The virtual machine cannot be found"},
    {VIX_E_SNAPSHOT_NOTFOUND, "A snapshot-related error has occurred: the snapshot was not found"},
    {VIX_E_HOST_NETWORK_CONN_REFUSED, "The server refused connection"},
    {VIX_E_DISK_OUTOFRANGE, "One or more sectors are out of range"},
    {VIX_E_DISK_INVALID_CONNECTION, "The connection is not valid"},
    {VIX_E_NET_HTTP_SSL_SECURITY, "SSL security error: the server's certificate thumbprint does not match"},
};

EXPORT char *VixDiskLib_GetErrorText(VixError err, const char *locale) {
  (void)locale;
  for (size_t i = 0; i < sizeof error_texts / sizeof error_texts[0]; i++)
    if (error_texts[i].code == VIX_ERROR_CODE(err)) return strdup(error_texts[i].text);
  return strdup("Unknown error");
}

EXPORT void VixDiskLib_FreeErrorText(char *text) { free(text); }

EXPORT VixDiskLibConnectParams *VixDiskLib_AllocateConnectParams(void) {
  return calloc(1, sizeof(VixDiskLibConnectParams));
}

EXPORT void VixDiskLib_FreeConnectParams(VixDiskLibConnectParams *params) { free(params); }

EXPORT VixError VixDiskLib_ConnectEx(const VixDiskLibConnectParams *params, char read_only, const char *snapshot_ref,
                                     const char *transport_modes, VixDiskLibConnection *connection) {
  struct connection *c;
  const char *vm;
  (void)transport_modes;
  if (!initialized || params == NULL || connection == NULL) return VIX_E_INVALID_ARG;
  if (!read_only && snapshot_ref != NULL) return VIX_E_INVALID_ARG; /* a snapshot is read only */
  if (params->serverName == NULL || strcmp(params->serverName, conf.server) != 0) {
    say(warn_fn, "lab VDDK: cannot connect to host %s\n", params->serverName ? params->serverName : "(none)");
    return VIX_E_HOST_NETWORK_CONN_REFUSED;
  }
  if (params->thumbPrint == NULL || strcasecmp(params->thumbPrint, conf.thumbprint) != 0) {
    say(warn_fn, "lab VDDK: SSL verification of %s failed: thumbprint mismatch\n", conf.server);
    return VIX_E_NET_HTTP_SSL_SECURITY;
  }
  if (params->credType != VIXDISKLIB_CRED_UID || params->creds.uid.userName == NULL ||
      params->creds.uid.password == NULL || strcmp(params->creds.uid.userName, conf.user) != 0 ||
      strcmp(params->creds.uid.password, conf.password) != 0) {
    say(warn_fn, "lab VDDK: cannot complete login due to an incorrect user name or password\n");
    return VIX_E_HOST_USER_PERMISSIONS;
  }
  if (params->vmxSpec == NULL || strncmp(params->vmxSpec, "moref=", 6) != 0) return VIX_E_INVALID_ARG;
  vm = params->vmxSpec + 6;
  if (!vm_known(vm)) return VIX_E_VM_NOT_FOUND;
  if (snapshot_ref != NULL && !snapshot_exists(snapshot_ref)) return VIX_E_SNAPSHOT_NOTFOUND;
  c = calloc(1, sizeof *c);
  c->vm = strdup(vm);
  c->snapshot = snapshot_ref ? strdup(snapshot_ref) : NULL;
  *connection = c;
  return VIX_OK;
}

EXPORT VixError VixDiskLib_Disconnect(VixDiskLibConnection connection) {
  struct connection *c = connection;
  if (c == NULL) return VIX_E_INVALID_ARG;
  free(c->vm);
  free(c->snapshot);
  free(c);
  return VIX_OK;
}

static void stop_server(struct handle *h) {
  char sock[PATH_MAX], *spy = libdir_path("reads.log");
  FILE *fp;
  if (spy && h->file && access(spy, F_OK) == 0 && (fp = fopen(spy, "a")) != NULL) {
    fprintf(fp, "%s\t%llu\t%d\n", h->file, (unsigned long long)h->bytes_read, (int)getpid());
    fclose(fp);
  }
  free(spy);
  if (h->nbd) nbd_close(h->nbd);
  if (h->server > 0) {
    kill(h->server, SIGTERM);
    waitpid(h->server, NULL, 0);
  }
  if (h->workdir) {
    snprintf(sock, sizeof sock, "%s/nbd.sock", h->workdir);
    unlink(sock);
    rmdir(h->workdir);
  }
  free(h->workdir);
  free(h->snapshot);
  free(h->file);
  free(h);
}

/* qemu-nbd serving ``image`` as of ``snapshot`` on a private socket; it dies with this process. On the NFS
 * datastore ``vmdk`` is the file the snapshot froze (its own backing), read as it is: ESXi's file is the view. */
static VixError start_server(struct handle *h, const char *image, const char *snapshot, const char *vmdk) {
  char tmpl[PATH_MAX - 16], sock[PATH_MAX], opts[PATH_MAX + 128], load[256], *run = libdir_path("run");
  struct timespec pause = {0, 20 * 1000 * 1000};
  if (run == NULL) return VIX_E_FAIL;
  mkdir(run, 0700); /* under the lab's VDDK: a lab restart clears what a killed reader left */
  snprintf(tmpl, sizeof tmpl, "%s/h-XXXXXX", run);
  free(run);
  if (mkdtemp(tmpl) == NULL) return VIX_E_FAIL;
  h->workdir = strdup(tmpl);
  snprintf(sock, sizeof sock, "%s/nbd.sock", tmpl);
  snprintf(opts, sizeof opts, "driver=%s,file.driver=file,file.filename=%s,file.locking=off", vmdk ? "vmdk" : "qcow2",
           vmdk ? vmdk : image);
  snprintf(load, sizeof load, "--load-snapshot=snapshot.name=%s", snapshot);
  h->server = fork();
  if (h->server < 0) return VIX_E_FAIL;
  if (h->server == 0) {
    int null = open("/dev/null", O_WRONLY);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (null >= 0) dup2(null, 2);
    if (vmdk)
      execl(conf.qemu_nbd, "qemu-nbd", "--read-only", "--persistent", "--shared=64", "--image-opts", "--socket", sock,
            opts, (char *)NULL);
    else
      execl(conf.qemu_nbd, "qemu-nbd", "--read-only", "--persistent", "--shared=64", "--image-opts", load,
            "--socket", sock, opts, (char *)NULL);
    _exit(127);
  }
  h->nbd = nbd_create();
  if (h->nbd == NULL || nbd_add_meta_context(h->nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1) return VIX_E_FAIL;
  for (int i = 0; i < 500; i++) { /* up to 10 s */
    if (waitpid(h->server, NULL, WNOHANG) == h->server) {
      h->server = 0;
      return VIX_E_SNAPSHOT_NOTFOUND; /* qemu-nbd could not load it: dropped meanwhile */
    }
    if (access(sock, F_OK) == 0 && nbd_connect_unix(h->nbd, sock) == 0) {
      int64_t size = nbd_get_size(h->nbd);
      if (size < 0) return VIX_E_FAIL;
      h->size = (uint64_t)size;
      return VIX_OK;
    }
    if (access(sock, F_OK) == 0) { /* a failed connect leaves the handle unusable: a fresh one */
      nbd_close(h->nbd);
      h->nbd = nbd_create();
      if (h->nbd == NULL || nbd_add_meta_context(h->nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1) return VIX_E_FAIL;
    }
    nanosleep(&pause, NULL);
  }
  return VIX_E_FAIL;
}

EXPORT VixError VixDiskLib_Open(const VixDiskLibConnection connection, const char *path, uint32_t flags,
                                VixDiskLibHandle *handle) {
  struct connection *c = connection;
  struct handle *h;
  const char *image;
  VixError err;
  if (c == NULL || path == NULL || handle == NULL) return VIX_E_INVALID_ARG;
  if (c->snapshot == NULL) return VIX_E_NOT_SUPPORTED; /* the lab serves snapshots only */
  if (!(flags & VIXDISKLIB_FLAG_OPEN_READ_ONLY)) return VIX_E_FILE_ACCESS_ERROR;
  image = image_of(c->vm, path);
  if (image == NULL) {
    say(warn_fn, "lab VDDK: %s is not a disk of %s\n", path, c->vm);
    return VIX_E_FILE_NOT_FOUND;
  }
  if (!snapshot_exists(c->snapshot)) return VIX_E_SNAPSHOT_NOTFOUND;
  h = calloc(1, sizeof *h);
  h->snapshot = strdup(c->snapshot);
  h->file = strdup(path);
  if (conf.datastore != NULL && strncmp(path, conf.datastore, strlen(conf.datastore)) == 0) {
    char vmdk[PATH_MAX];
    snprintf(vmdk, sizeof vmdk, "%s/%s", conf.datastore_dir, path + strlen(conf.datastore));
    err = start_server(h, image, c->snapshot, vmdk);
  } else {
    err = start_server(h, image, c->snapshot, NULL);
  }
  if (err != VIX_OK) {
    stop_server(h);
    return err;
  }
  *handle = h;
  return VIX_OK;
}

EXPORT const char *VixDiskLib_GetTransportMode(VixDiskLibHandle handle) {
  (void)handle;
  return "nbdssl";
}

EXPORT VixError VixDiskLib_Close(VixDiskLibHandle handle) {
  if (handle == NULL) return VIX_E_INVALID_ARG;
  stop_server(handle);
  return VIX_OK;
}

EXPORT VixError VixDiskLib_GetInfo(VixDiskLibHandle handle, VixDiskLibInfo **info) {
  struct handle *h = handle;
  VixDiskLibInfo *i;
  if (h == NULL || info == NULL) return VIX_E_INVALID_ARG;
  i = calloc(1, sizeof *i);
  i->capacity = h->size / VIXDISKLIB_SECTOR_SIZE;
  i->biosGeo.heads = i->physGeo.heads = 255;
  i->biosGeo.sectors = i->physGeo.sectors = 63;
  i->biosGeo.cylinders = i->physGeo.cylinders = (uint32_t)(i->capacity / (255 * 63));
  i->adapterType = VIXDISKLIB_ADAPTER_SCSI_LSILOGIC;
  i->numLinks = 1;
  *info = i;
  return VIX_OK;
}

EXPORT void VixDiskLib_FreeInfo(VixDiskLibInfo *info) { free(info); }

EXPORT VixError VixDiskLib_Read(VixDiskLibHandle handle, uint64_t start_sector, uint64_t nr_sectors,
                                unsigned char *buf) {
  struct handle *h = handle;
  if (h == NULL || buf == NULL) return VIX_E_INVALID_ARG;
  if (start_sector + nr_sectors > h->size / VIXDISKLIB_SECTOR_SIZE) return VIX_E_DISK_OUTOFRANGE;
  if (!snapshot_exists(h->snapshot)) return VIX_E_SNAPSHOT_NOTFOUND;
  if (nbd_pread(h->nbd, buf, nr_sectors * VIXDISKLIB_SECTOR_SIZE, start_sector * VIXDISKLIB_SECTOR_SIZE, 0) == -1) {
    say(warn_fn, "lab VDDK: read failed: %s\n", nbd_get_error());
    return VIX_E_FAIL;
  }
  __atomic_add_fetch(&h->bytes_read, nr_sectors * VIXDISKLIB_SECTOR_SIZE, __ATOMIC_RELAXED);
  /* Still there after the read: it was not dropped before the read ended (the lab drops the marker first). */
  return snapshot_exists(h->snapshot) ? VIX_OK : VIX_E_SNAPSHOT_NOTFOUND;
}

EXPORT VixError VixDiskLib_Write(VixDiskLibHandle handle, uint64_t start_sector, uint64_t nr_sectors,
                                 const unsigned char *buf) {
  (void)handle, (void)start_sector, (void)nr_sectors, (void)buf;
  return VIX_E_FILE_ACCESS_ERROR; /* opened read only */
}

EXPORT VixError VixDiskLib_Flush(VixDiskLibHandle handle) { return handle ? VIX_OK : VIX_E_INVALID_ARG; }

struct chunks {
  uint64_t first, chunk;    /* in bytes */
  unsigned char *allocated; /* one flag per chunk */
  uint64_t n;
  uint64_t reached; /* the end of the areas the server described */
};

static int mark(void *opaque, const char *context, uint64_t offset, uint32_t *entries, size_t nr, int *error) {
  struct chunks *c = opaque;
  (void)error;
  if (strcmp(context, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0) return 0;
  for (size_t i = 0; i + 1 < nr; i += 2) {
    uint64_t length = entries[i];
    if (!(entries[i + 1] & LIBNBD_STATE_HOLE)) {
      uint64_t from = (offset - c->first) / c->chunk, to = (offset + length - c->first + c->chunk - 1) / c->chunk;
      for (uint64_t k = from; k < to && k < c->n; k++) c->allocated[k] = 1;
    }
    offset += length;
  }
  if (offset > c->reached) c->reached = offset;
  return 0;
}

EXPORT VixError VixDiskLib_QueryAllocatedBlocks(VixDiskLibHandle handle, uint64_t start_sector, uint64_t nr_sectors,
                                                uint64_t chunk_size, VixDiskLibBlockList **block_list) {
  struct handle *h = handle;
  struct chunks c;
  VixDiskLibBlockList *list;
  uint64_t pos, end;
  uint32_t blocks = 0;
  if (h == NULL || block_list == NULL || chunk_size < VIXDISKLIB_MIN_CHUNK_SIZE || start_sector % chunk_size ||
      nr_sectors % chunk_size || nr_sectors == 0 || nr_sectors / chunk_size > VIXDISKLIB_MAX_CHUNK_NUMBER)
    return VIX_E_INVALID_ARG;
  if (start_sector + nr_sectors > h->size / VIXDISKLIB_SECTOR_SIZE) return VIX_E_DISK_OUTOFRANGE;
  if (!snapshot_exists(h->snapshot)) return VIX_E_SNAPSHOT_NOTFOUND;
  c.first = start_sector * VIXDISKLIB_SECTOR_SIZE;
  c.chunk = chunk_size * VIXDISKLIB_SECTOR_SIZE;
  c.n = nr_sectors / chunk_size;
  c.allocated = calloc(c.n, 1);
  end = c.first + nr_sectors * VIXDISKLIB_SECTOR_SIZE;
  for (pos = c.first; pos < end;) {
    uint64_t want = end - pos > (1u << 30) ? (1u << 30) : end - pos;
    nbd_extent_callback cb = {.callback = mark, .user_data = &c};
    c.reached = pos;
    if (nbd_block_status(h->nbd, want, pos, cb, 0) == -1 || c.reached <= pos) {
      free(c.allocated);
      return VIX_E_FAIL;
    }
    pos = c.reached; /* the server may describe less than asked, or more */
  }
  for (uint64_t k = 0; k < c.n; k++)
    if (c.allocated[k] && (k == 0 || !c.allocated[k - 1])) blocks++;
  list = calloc(1, sizeof *list + (blocks ? blocks - 1 : 0) * sizeof(VixDiskLibBlock));
  list->numBlocks = blocks;
  blocks = 0;
  for (uint64_t k = 0; k < c.n; k++) {
    if (!c.allocated[k]) continue;
    if (k == 0 || !c.allocated[k - 1]) list->blocks[blocks++].offset = start_sector + k * chunk_size;
    list->blocks[blocks - 1].length += chunk_size;
  }
  free(c.allocated);
  *block_list = list;
  return snapshot_exists(h->snapshot) ? VIX_OK : VIX_E_SNAPSHOT_NOTFOUND;
}

EXPORT VixError VixDiskLib_FreeBlockList(VixDiskLibBlockList *block_list) {
  free(block_list);
  return VIX_OK;
}
