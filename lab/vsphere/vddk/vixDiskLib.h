/* The part of VMware's VixDiskLib API (VDDK 6.7 and later) the lab's test double implements.
 *
 * Written here from the published API (VMware's "Virtual Disk Development Kit Programming Guide"
 * and its reference): the types, the structure layouts and the entry points a reader of a
 * vSphere disk calls. The layouts are the library's ABI, so nbdkit's own vddk plugin can load the
 * double as it loads the real library.
 */
#ifndef XMS_LAB_VIXDISKLIB_H
#define XMS_LAB_VIXDISKLIB_H

#include <stdarg.h>
#include <stdint.h>

typedef uint64_t VixError;
#define VIX_ERROR_CODE(err) ((err) & 0xFFFF)

/* The error codes the double returns (values of the published VIX error list). */
enum {
  VIX_OK = 0,
  VIX_E_FAIL = 1,
  VIX_E_INVALID_ARG = 3,
  VIX_E_FILE_NOT_FOUND = 4,
  VIX_E_NOT_SUPPORTED = 6,
  VIX_E_FILE_ACCESS_ERROR = 13,
  VIX_E_HOST_USER_PERMISSIONS = 3014,
  VIX_E_VM_NOT_FOUND = 4000,
  VIX_E_SNAPSHOT_NOTFOUND = 13003,
  VIX_E_HOST_NETWORK_CONN_REFUSED = 14009,
  VIX_E_DISK_OUTOFRANGE = 16007,
  VIX_E_DISK_INVALID_CONNECTION = 16054,
  VIX_E_NET_HTTP_SSL_SECURITY = 30201,
};

#define VIXDISKLIB_SECTOR_SIZE 512
#define VIXDISKLIB_FLAG_OPEN_READ_ONLY 4
#define VIXDISKLIB_MIN_CHUNK_SIZE 128
#define VIXDISKLIB_MAX_CHUNK_NUMBER (512 * 1024)

typedef void *VixDiskLibConnection;
typedef void *VixDiskLibHandle;
typedef void VixDiskLibGenericLogFunc(const char *fmt, va_list args);

typedef enum {
  VIXDISKLIB_CRED_UID = 1,
  VIXDISKLIB_CRED_SESSIONID = 2,
  VIXDISKLIB_CRED_TICKETID = 3,
  VIXDISKLIB_CRED_SSPI = 4,
  VIXDISKLIB_CRED_UNKNOWN = 256
} VixDiskLibCredType;

typedef enum {
  VIXDISKLIB_SPEC_VMX = 0,
  VIXDISKLIB_SPEC_VSTORAGE_OBJECT = 1,
  VIXDISKLIB_SPEC_UNKNOWN = 2
} VixDiskLibSpecType;

typedef struct {
  char *id;
  char *datastoreMoRef;
  char *ssId;
} VixDiskLibVStorageObjectSpec;

typedef struct {
  char *vmxSpec;    /* "moref=vm-42" for a VM of a vCenter */
  char *serverName; /* the vCenter (or ESXi host) */
  char *thumbPrint; /* SHA-1 of its certificate, "AA:BB:..." */
  long privateUse;
  VixDiskLibCredType credType;
  union {
    struct {
      char *userName;
      char *password;
    } uid;
    struct {
      char *cookie;
      char *userName;
      char *key;
    } sessionId;
    void *ticketId;
  } creds;
  uint32_t port;
  uint32_t nfcHostPort;
  char *vimApiVer;
  char reserved[8];
  void *reserved2;
  union {
    VixDiskLibVStorageObjectSpec vStorageObjSpec;
  } spec;
  VixDiskLibSpecType specType;
} VixDiskLibConnectParams;

typedef struct {
  uint32_t cylinders;
  uint32_t heads;
  uint32_t sectors;
} VixDiskLibGeometry;

typedef enum {
  VIXDISKLIB_ADAPTER_IDE = 1,
  VIXDISKLIB_ADAPTER_SCSI_BUSLOGIC = 2,
  VIXDISKLIB_ADAPTER_SCSI_LSILOGIC = 3,
  VIXDISKLIB_ADAPTER_UNKNOWN = 256
} VixDiskLibAdapterType;

typedef struct {
  VixDiskLibGeometry biosGeo;
  VixDiskLibGeometry physGeo;
  uint64_t capacity; /* in sectors */
  VixDiskLibAdapterType adapterType;
  int numLinks;
  char *parentFileNameHint;
  char *uuid;
} VixDiskLibInfo;

typedef struct {
  uint64_t offset; /* in sectors */
  uint64_t length; /* in sectors */
} VixDiskLibBlock;

typedef struct {
  uint32_t numBlocks;
  VixDiskLibBlock blocks[1];
} VixDiskLibBlockList;

#endif
